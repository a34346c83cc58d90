import Crypto
import Foundation
import Shared
import Testing

@Suite("Module descriptor: canonical JSON and Ed25519 signatures")
struct ModuleDescriptorTests {
    static func payload() throws -> ModuleDescriptor.Payload {
        let manifest = try ModuleManifest.parse(yaml: ModuleFixture.twoServiceManifest, file: "module.yaml").manifest
        return ModuleDescriptor.Payload(
            manifest: manifest, image: .init(digest: String(repeating: "ab", count: 32), size: 16384),
            objects: [
                .init(digest: String(repeating: "cd", count: 32), size: 12),
                .init(digest: String(repeating: "01", count: 32), size: 7),
                .init(digest: String(repeating: "cd", count: 32), size: 12),
            ])
    }

    @Test("canonical JSON: sorted keys, no whitespace, minimal escapes, integers only")
    func canonicalJSON() throws {
        struct Sample: Encodable {
            var zeta = 1
            var alpha = "a\"b\\c\nd/é\u{1}"
            var list = [true, false]
            var nested = ["b": 2, "a": -3]
        }
        let bytes = try CanonicalJSON.encode(Sample())
        let expected = #"{"alpha":"a\"b\\c\nd/é\u0001","list":[true,false],"nested":{"a":-3,"b":2},"zeta":1}"#
        #expect(String(decoding: bytes, as: UTF8.self) == expected)

        struct Fractional: Encodable { var x = 1.5 }
        #expect(throws: MusterError.self) { try CanonicalJSON.encode(Fractional()) }
    }

    @Test("payload objects are sorted and unique")
    func sortedObjects() throws {
        let payload = try Self.payload()
        #expect(
            payload.objects.map(\.digest) == [String(repeating: "01", count: 32), String(repeating: "cd", count: 32)])
        #expect(payload.totalObjectBytes == 19)
    }

    @Test("a signed descriptor verifies with the signing key, also after a JSON round trip")
    func verifies() throws {
        let key = Curve25519.Signing.PrivateKey()
        let descriptor = try ModuleDescriptor.sign(try Self.payload(), with: key)
        #expect(descriptor.signature.keyID == ModuleDescriptor.keyID(of: key.publicKey))
        #expect(try descriptor.verify(trustedKeys: [key.publicKey]) == descriptor.payload)

        let decoded = try ModuleDescriptor.decode(try descriptor.encoded(), source: "descriptor.json")
        #expect(
            try decoded.verify(trustedKeys: [Curve25519.Signing.PrivateKey().publicKey, key.publicKey])
                == descriptor.payload)
        // Deterministic: signing again gives the same bytes.
        #expect(try ModuleDescriptor.sign(try Self.payload(), with: key).encoded() == descriptor.encoded())
    }

    @Test("a descriptor signed by another key is refused as unknown")
    func unknownKey() throws {
        let descriptor = try ModuleDescriptor.sign(try Self.payload(), with: Curve25519.Signing.PrivateKey())
        let error = try #require(throws: MusterError.self) {
            try descriptor.verify(trustedKeys: [Curve25519.Signing.PrivateKey().publicKey])
        }
        #expect(error.code == .verificationFailed)
        #expect(error.message.contains("unknown key"))
    }

    @Test("a key id naming the trusted key with someone else's signature is refused")
    func wrongKeyClaimingTrustedID() throws {
        let trusted = Curve25519.Signing.PrivateKey()
        let attacker = Curve25519.Signing.PrivateKey()
        var descriptor = try ModuleDescriptor.sign(try Self.payload(), with: attacker)
        descriptor.signature.keyID = ModuleDescriptor.keyID(of: trusted.publicKey)
        let error = try #require(throws: MusterError.self) { try descriptor.verify(trustedKeys: [trusted.publicKey]) }
        #expect(error.code == .verificationFailed)
        #expect(error.message.contains("does not match"))
    }

    struct Tamper: CustomTestStringConvertible, Sendable {
        var label: String
        var apply: @Sendable (inout ModuleDescriptor) -> Void
        var testDescription: String { label }
    }

    static let tampers: [Tamper] = [
        Tamper(label: "image digest") { $0.payload.image.digest = String(repeating: "ee", count: 32) },
        Tamper(label: "object size") { $0.payload.objects[0].size += 1 },
        Tamper(label: "object dropped") { $0.payload.objects.removeLast() },
        Tamper(label: "exec changed") { $0.payload.manifest.services[0].exec = ["/bin/sh", "-c", "evil"] },
        Tamper(label: "sandbox relaxed") { $0.payload.manifest.sandbox = .trusted },
        Tamper(label: "version bumped") { $0.payload.manifest.version = "9.9.9" },
        Tamper(label: "signature bit flipped") { descriptor in
            var bytes = Array(Data(base64Encoded: descriptor.signature.value) ?? Data())
            bytes[10] ^= 0x01
            descriptor.signature.value = Data(bytes).base64EncodedString()
        },
    ]

    @Test("a tampered descriptor is refused", arguments: tampers)
    func tampered(_ tamper: Tamper) throws {
        let key = Curve25519.Signing.PrivateKey()
        var descriptor = try ModuleDescriptor.sign(try Self.payload(), with: key)
        tamper.apply(&descriptor)
        let error = try #require(throws: MusterError.self) { try descriptor.verify(trustedKeys: [key.publicKey]) }
        #expect(error.code == .verificationFailed)
    }

    @Test("a tampered descriptor.json file (text edit) is refused")
    func tamperedFile() throws {
        let key = Curve25519.Signing.PrivateKey()
        let descriptor = try ModuleDescriptor.sign(try Self.payload(), with: key)
        let text = String(decoding: try descriptor.encoded(), as: UTF8.self)
        #expect(text.contains("\"/bin/api\""))
        let edited = text.replacingOccurrences(of: "\"/bin/api\"", with: "\"/bin/apx\"")
        let decoded = try ModuleDescriptor.decode(Data(edited.utf8), source: "descriptor.json")
        #expect(throws: MusterError.self) { try decoded.verify(trustedKeys: [key.publicKey]) }
    }

    @Test("a correctly signed manifest that breaks the rules is still refused on verify")
    func signedButInvalid() throws {
        let key = Curve25519.Signing.PrivateKey()
        var payload = try Self.payload()
        payload.manifest.services[0].environment["X"] = "a\nExecStartPre=/bin/evil"
        let descriptor = try ModuleDescriptor.sign(payload, with: key)
        let error = try #require(throws: MusterError.self) { try descriptor.verify(trustedKeys: [key.publicKey]) }
        #expect(error.code == .invalidInput)
        #expect(error.message.contains("services[0].env.X"))
    }

    @Test("a signed health check with both probes is refused on verify")
    func signedHealthCheckWithBothProbes() throws {
        let key = Curve25519.Signing.PrivateKey()
        var payload = try Self.payload()
        payload.manifest.services[0].healthCheck = .init(http: "http://127.0.0.1/", exec: ["/bin/api"])
        let descriptor = try ModuleDescriptor.sign(payload, with: key)
        let error = try #require(throws: MusterError.self) { try descriptor.verify(trustedKeys: [key.publicKey]) }
        #expect(error.message.contains("services[0].healthCheck: needs exactly one"))
    }

    @Test("object names that are not sha256 digests are never turned into paths")
    func objectNamesAreDigests() {
        let objects = ObjectDirectory(path: "/nonexistent")
        let problems = objects.verify([.init(digest: "../../etc/shadow", size: 1)])
        #expect(problems == [.unreadable(digest: "../../etc/shadow", reason: "not a lowercase hex sha256")])
        #expect(ObjectDirectory.isDigest(String(repeating: "0f", count: 32)))
        #expect(!ObjectDirectory.isDigest(String(repeating: "0F", count: 32)))
        #expect(ObjectDirectory.relativePath(of: "abcdef") == "ab/cdef")
    }

    @Test("garbage is not a descriptor")
    func garbage() {
        let error = #expect(throws: MusterError.self) { try ModuleDescriptor.decode(Data("{}".utf8), source: "d.json") }
        #expect(error?.code == .invalidInput)
    }
}
