import Foundation
import Shared
import Testing

@testable import Agent

/// `checkHealth` requests with an expected status and JSON values, against a real HTTP server on loopback.
@Suite("checkHealth: HTTP requests with expected JSON")
struct CheckHealthRequestTests {
    /// Answers `GET /repos` with a JSON document, `/missing` with 404, anything else with a non-JSON body.
    static func withServer(_ body: @Sendable (Int) async throws -> Void) async throws {
        try await TestHTTPServer.with(
            answer: { request in
                let (status, text): (String, String) =
                    if request.hasPrefix("GET /repos ") {
                        ("200 OK", #"{"count": 20, "mode": "postgres", "repositories": [{"name": "a/b"}], "missing": 0}"#)
                    } else if request.hasPrefix("GET /missing ") {
                        ("404 Not Found", "{}")
                    } else {
                        ("200 OK", "<html>not json</html>")
                    }
                return "HTTP/1.0 \(status)\r\nContent-Type: application/json\r\n\r\n\(text)"
            }, body)
    }

    @Test func statusAndJSONValuesAreChecked() async throws {
        try await Self.withServer { port in
            let base = "http://127.0.0.1:\(port)"
            let ok = await CheckHealth.checkRequest(
                .init(
                    name: "repos", url: "\(base)/repos",
                    json: [
                        "/count": .number(20), "/mode": .string("postgres"), "/repositories/0/name": .string("a/b"),
                    ]),
                timeout: .seconds(10))
            #expect(ok.ok, "\(ok.detail)")

            let wrongValue = await CheckHealth.checkRequest(
                .init(url: "\(base)/repos", json: ["/count": .number(21), "/absent": .null]), timeout: .seconds(10))
            #expect(!wrongValue.ok)
            #expect(wrongValue.detail.contains("/count is 20, expected 21"), "\(wrongValue.detail)")
            #expect(wrongValue.detail.contains("/absent is missing"), "\(wrongValue.detail)")

            let wrongStatus = await CheckHealth.checkRequest(.init(url: "\(base)/missing"), timeout: .seconds(10))
            #expect(!wrongStatus.ok && wrongStatus.detail == "HTTP 404, expected 200")
            let expected404 = await CheckHealth.checkRequest(
                .init(url: "\(base)/missing", status: 404), timeout: .seconds(10))
            #expect(expected404.ok)

            let notJSON = await CheckHealth.checkRequest(
                .init(url: "\(base)/page", json: ["/x": .number(1)]), timeout: .seconds(10))
            #expect(!notJSON.ok && notJSON.detail.contains("not valid JSON"), "\(notJSON.detail)")
        }
    }

    @Test func nobodyListeningIsAFailedCheckNotAnError() async throws {
        let check = await CheckHealth.checkRequest(.init(url: "http://127.0.0.1:1/x"), timeout: .seconds(5))
        #expect(!check.ok)
    }
}
