import Foundation
import Shared
import Testing

@testable import Agent

@Suite("Agent session state machine")
struct SessionStateMachineTests {
    static let node = UUID()
    static let t0 = Date(timeIntervalSince1970: 1_800_000_000)

    func machine(lifetime: TimeInterval = 3000) -> SessionStateMachine {
        SessionStateMachine(
            nodeID: Self.node, agentVersion: "0.1.0", certificateNotBefore: Self.t0,
            certificateNotAfter: Self.t0.addingTimeInterval(lifetime),
            backoff: Backoff(base: .seconds(1), cap: .seconds(8)), minimumHeartbeatInterval: .milliseconds(100))
    }

    func welcome(_ interval: Duration = .seconds(10)) -> Message {
        .welcome(Welcome(nodeID: Self.node, protocolVersion: .v1, heartbeatInterval: interval, serverTime: Self.t0))
    }

    @Test func connectHelloWelcomeHeartbeat() {
        var sm = machine()
        #expect(sm.start() == .connect)
        #expect(sm.connected() == .sendHello(Hello(nodeID: Self.node, agentVersion: "0.1.0")))
        #expect(sm.received(welcome(.seconds(12)), now: Self.t0) == .startHeartbeats(interval: .seconds(12)))
        #expect(sm.state == .established)
        #expect(sm.heartbeatDue(now: Self.t0.addingTimeInterval(12)) == .sendHeartbeat)
        #expect(sm.received(.heartbeatAck(HeartbeatAck(heartbeatInterval: .seconds(12))), now: Self.t0) == .none)
        #expect(
            sm.received(.heartbeatAck(HeartbeatAck(heartbeatInterval: .seconds(20))), now: Self.t0)
                == .updateHeartbeatInterval(.seconds(20)))
    }

    @Test func assignedIntervalNeverBelowTheAgentMinimum() {
        var sm = machine()
        _ = sm.start()
        _ = sm.connected()
        #expect(sm.received(welcome(.milliseconds(1)), now: Self.t0) == .startHeartbeats(interval: .milliseconds(100)))
    }

    @Test func heartbeatsBeforeWelcomeAreNotSent() {
        var sm = machine()
        _ = sm.start()
        _ = sm.connected()
        #expect(sm.heartbeatDue(now: Self.t0) == .none)
    }

    @Test func renewalAtTwoThirdsOfTheLifetimeOnce() {
        var sm = machine(lifetime: 3000)
        _ = sm.start()
        _ = sm.connected()
        _ = sm.received(welcome(), now: Self.t0)
        #expect(sm.renewalDate == Self.t0.addingTimeInterval(2000))
        let ack = Message.heartbeatAck(HeartbeatAck(heartbeatInterval: .seconds(10)))
        #expect(sm.heartbeatDue(now: Self.t0.addingTimeInterval(1999)) == .sendHeartbeat)
        _ = sm.received(ack, now: Self.t0)
        #expect(sm.heartbeatDue(now: Self.t0.addingTimeInterval(2000)) == .sendHeartbeatAndRenew)
        _ = sm.received(ack, now: Self.t0)
        // Pending: not requested again on the next beat.
        #expect(sm.heartbeatDue(now: Self.t0.addingTimeInterval(2010)) == .sendHeartbeat)
        _ = sm.received(ack, now: Self.t0)
        let notAfter = Self.t0.addingTimeInterval(5000)
        #expect(
            sm.received(
                .certificateRenewed(CertificateRenewed(certificatePEM: "PEM", notAfter: notAfter)),
                now: Self.t0.addingTimeInterval(2020))
                == .storeCertificate(pem: "PEM", notAfter: notAfter))
        #expect(sm.heartbeatDue(now: Self.t0.addingTimeInterval(2030)) == .sendHeartbeat)
    }

    @Test func failedRenewalIsRetriedAtTheNextBeat() {
        var sm = machine(lifetime: 30)
        _ = sm.start()
        _ = sm.connected()
        _ = sm.received(welcome(), now: Self.t0)
        #expect(sm.heartbeatDue(now: Self.t0.addingTimeInterval(25)) == .sendHeartbeatAndRenew)
        #expect(sm.received(.error(ErrorMessage(code: .databaseUnavailable, message: "db")), now: Self.t0) == .none)
        #expect(sm.heartbeatDue(now: Self.t0.addingTimeInterval(26)) == .sendHeartbeatAndRenew)
    }

    @Test func reconnectBacksOffAndResetsAfterWelcome() {
        var sm = machine()
        _ = sm.start()
        let lost = MusterError(.connectionFailed, "refused")
        #expect(sm.connectionLost(lost, unitRandom: 1) == .reconnect(after: .seconds(1)))
        #expect(sm.retry() == .connect)
        #expect(sm.connectionLost(lost, unitRandom: 1) == .reconnect(after: .seconds(2)))
        _ = sm.retry()
        #expect(sm.connectionLost(lost, unitRandom: 0.5) == .reconnect(after: .seconds(2)))
        _ = sm.retry()
        #expect(sm.connectionLost(lost, unitRandom: 1) == .reconnect(after: .seconds(8)))
        _ = sm.retry()
        #expect(sm.connectionLost(lost, unitRandom: 1) == .reconnect(after: .seconds(8)))
        _ = sm.retry()
        _ = sm.connected()
        _ = sm.received(welcome(), now: Self.t0)
        #expect(sm.failures == 0)
        #expect(sm.connectionLost(lost, unitRandom: 1) == .reconnect(after: .seconds(1)))
    }

    @Test func forgottenNodeStopsForGood() {
        var sm = machine()
        _ = sm.start()
        _ = sm.connected()
        let action = sm.received(
            .error(ErrorMessage(code: .nodeForgotten, message: "node was removed", hint: "join again")), now: Self.t0)
        guard case .stop(let reason) = action else {
            Issue.record("expected stop, got \(action)")
            return
        }
        #expect(reason.code == .nodeForgotten)
        #expect(reason.error.hint == "join again")
        #expect(sm.state == .stopped)
        #expect(sm.connectionLost(MusterError(.connectionFailed, "closed"), unitRandom: 1) == .none)
        #expect(sm.retry() == .none)
    }

    @Test func versionMismatchStopsOtherErrorsReconnect() {
        var sm = machine()
        _ = sm.start()
        _ = sm.connected()
        guard case .stop = sm.received(.error(ErrorMessage(code: .protocolVersion, message: "v9")), now: Self.t0) else {
            Issue.record("expected stop")
            return
        }
        var other = machine()
        _ = other.start()
        _ = other.connected()
        #expect(
            other.received(.error(ErrorMessage(code: .databaseUnavailable, message: "db")), now: Self.t0)
                == .reconnect(after: .seconds(1)))
    }

    @Test func unexpectedMessageReconnects() {
        var sm = machine()
        _ = sm.start()
        _ = sm.connected()
        #expect(
            sm.received(.heartbeatAck(HeartbeatAck(heartbeatInterval: .seconds(1))), now: Self.t0)
                == .reconnect(after: .seconds(1)))
    }

    @Test func silentCoordinatorIsDetectedAfterThreeUnansweredHeartbeats() {
        var sm = machine()
        _ = sm.start()
        _ = sm.connected()
        _ = sm.received(welcome(), now: Self.t0)  // first heartbeat goes out with startHeartbeats
        #expect(sm.heartbeatDue(now: Self.t0) == .sendHeartbeat)
        #expect(sm.heartbeatDue(now: Self.t0) == .sendHeartbeat)
        #expect(sm.heartbeatDue(now: Self.t0) == .reconnect(after: .seconds(1)))
        #expect(sm.state == .disconnected)
        // An ack in time resets the count.
        var healthy = machine()
        _ = healthy.start()
        _ = healthy.connected()
        _ = healthy.received(welcome(), now: Self.t0)
        for _ in 0..<10 {
            #expect(healthy.heartbeatDue(now: Self.t0) == .sendHeartbeat)
            _ = healthy.received(.heartbeatAck(HeartbeatAck(heartbeatInterval: .seconds(10))), now: Self.t0)
        }
    }

    @Test func taskMessagesInAnEstablishedSession() {
        var sm = machine()
        let task = UUID()
        let assign = AssignTask(taskID: task, kind: "checkHealth", spec: .emptyObject, attempt: 1)
        _ = sm.start()
        #expect(
            sm.connected(finishedTaskIDs: [task])
                == .sendHello(Hello(nodeID: Self.node, agentVersion: "0.1.0", finishedTaskIDs: [task])))
        // Before welcome an assignment is a protocol violation: reconnect.
        var early = sm
        guard case .reconnect = early.received(.assignTask(assign), now: Self.t0) else {
            Issue.record("an assignTask before welcome must drop the connection")
            return
        }
        _ = sm.received(welcome(), now: Self.t0)
        #expect(sm.received(.assignTask(assign), now: Self.t0) == .runTask(assign))
        #expect(sm.received(.cancelTask(CancelTask(taskID: task)), now: Self.t0) == .cancelTask(task))
        #expect(sm.received(.taskResultAck(TaskResultAck(taskID: task)), now: Self.t0) == .acknowledgeResult(task))
        #expect(sm.state == .established)
    }
}
