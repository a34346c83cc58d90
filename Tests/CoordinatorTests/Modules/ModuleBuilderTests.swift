import ArgumentParser
import Crypto
import Foundation
import Logging
import Shared
import TestSupport
import Testing

@testable import Coordinator

/// Builds real images with mkfs.erofs and mounts them with the kernel's erofs + overlayfs, each mount inside
/// `unshare -m --propagation private` so nothing outlives the test's shell.
@Suite("Module builder: objects, EROFS image, signed descriptor", .requiresRoot)
struct ModuleBuilderTests {
    static let signer = DescriptorSigner(key: Curve25519.Signing.PrivateKey())

    static func build(_ fixture: ModuleFixture, into name: String = "out", signer: DescriptorSigner = signer)
        async throws
        -> ModuleBuilder.Result
    {
        try await ModuleBuilder(logger: Logger(label: "test")).build(
            moduleDirectory: fixture.directory, outputDirectory: "\(fixture.base)/\(name)", signer: signer)
    }

    /// Mounts OUT's image over its objects at `base/target` in a private mount namespace and runs `script`
    /// there (`$T` is the mounted tree, `$SRC` the fixture's rootfs); `extraOptions` go to the overlay mount.
    static func inMountedImage(
        _ fixture: ModuleFixture, output: String, extraOptions: String = "", script: String
    ) throws -> (status: Int32, stdout: String, stderr: String) {
        let meta = "\(fixture.base)/mnt-meta"
        let target = "\(fixture.base)/mnt-target"
        try FileManager.default.createDirectory(atPath: meta, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: target, withIntermediateDirectories: true)
        let overlay = "ro,lowerdir=\(meta)::\(output)/objects,metacopy=on,redirect_dir=follow\(extraOptions)"
        let inner = """
            set -e
            mount -t erofs -o ro '\(output)/meta.erofs' '\(meta)'
            mount -t overlay overlay -o '\(overlay)' '\(target)'
            T='\(target)'; SRC='\(fixture.rootfs)'
            \(script)
            """
        let quoted = inner.replacingOccurrences(of: "'", with: "'\\''")
        return try ModuleFixture.shell("unshare -m --propagation private sh -c '\(quoted)'")
    }

    /// One line per entry below `$1`: directories with mode, symlinks with target, files with size and mode.
    static let listing =
        #"find "$1" -mindepth 1 \( -type d -printf '%P d %m\n' \) -o \( -type l -printf '%P l %l\n' \) -o \( -type f -printf '%P f %s %m\n' \) | sort"#

    @Test("building twice gives the same image digest and the same descriptor bytes")
    func reproducible() async throws {
        let fixture = try ModuleFixture.standard()
        defer { fixture.remove() }
        let first = try await Self.build(fixture, into: "one")
        // Touch every source file: mtimes must not matter.
        #expect(
            try ModuleFixture.shell("find '\(fixture.rootfs)' -exec touch -h -d '2001-02-03 04:05:06' {} +").status == 0
        )
        let second = try await Self.build(fixture, into: "two")
        #expect(first.descriptor.payload.image == second.descriptor.payload.image)
        let bytesOne = FileManager.default.contents(atPath: "\(fixture.base)/one/descriptor.json")
        let bytesTwo = FileManager.default.contents(atPath: "\(fixture.base)/two/descriptor.json")
        #expect(bytesOne != nil && bytesOne == bytesTwo)
        #expect(
            FileManager.default.contents(atPath: "\(fixture.base)/one/meta.erofs")
                == FileManager.default.contents(atPath: "\(fixture.base)/two/meta.erofs"))
        // The image is metadata only: far smaller than the 1.1 MB of content.
        #expect(first.descriptor.payload.image.size < 64 * 1024)
    }

    @Test("an output directory on another filesystem than /tmp gives the same image (erofs-utils copy_file_range)")
    func outputOnAnotherFilesystem() async throws {
        let fixture = try ModuleFixture.standard()
        defer { fixture.remove() }
        let reference = try await Self.build(fixture, into: "here")
        // A tmpfs is always another filesystem than /tmp (also where /tmp is itself a tmpfs).
        let elsewhere = "\(fixture.base)/elsewhere"
        try FileManager.default.createDirectory(atPath: elsewhere, withIntermediateDirectories: true)
        let mounted = try ModuleFixture.shell("mount -t tmpfs -o size=64m tmpfs '\(elsewhere)'")
        try #require(mounted.status == 0, "mount tmpfs: \(mounted.stderr)")
        defer { _ = try? ModuleFixture.shell("umount '\(elsewhere)'") }
        let there = try await Self.build(fixture, into: "elsewhere/out")
        #expect(there.descriptor.payload.image == reference.descriptor.payload.image)
        #expect(
            FileManager.default.contents(atPath: "\(elsewhere)/out/meta.erofs")
                == FileManager.default.contents(atPath: "\(fixture.base)/here/meta.erofs"))
    }

    @Test("a changed file, mode or manifest changes the digest")
    func changes() async throws {
        let fixture = try ModuleFixture.standard()
        defer { fixture.remove() }
        let base = try await Self.build(fixture, into: "base").descriptor.payload

        try fixture.write("/etc/shop/config.toml", "port = 8081\n", mode: 0o644)
        let content = try await Self.build(fixture, into: "content").descriptor.payload
        #expect(content.image.digest != base.image.digest)
        #expect(Set(content.objects).subtracting(base.objects).count == 1)

        try FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: fixture.rootfs + "/share/a.txt")
        let mode = try await Self.build(fixture, into: "mode").descriptor.payload
        #expect(mode.image.digest != content.image.digest)
        #expect(mode.objects == content.objects)

        try fixture.writeManifest(ModuleFixture.twoServiceManifest.replacingOccurrences(of: "1.0.0", with: "1.0.1"))
        let manifest = try await Self.build(fixture, into: "manifest").descriptor.payload
        #expect(manifest.manifest.version == "1.0.1")
        #expect(manifest.image.digest != mode.image.digest)  // the UUID follows the module's identity
    }

    @Test("objects are named by sha256, stored once, read-only, and reused by a later build")
    func objects() async throws {
        let fixture = try ModuleFixture.standard()
        defer { fixture.remove() }
        let result = try await Self.build(fixture)
        let payload = result.descriptor.payload
        // api, db, config, the shared a/b content, big.bin; no object for the empty file.
        #expect(payload.objects.count == 5)
        #expect(result.newObjects == 5)
        let objects = ObjectDirectory(path: "\(fixture.base)/out/objects")
        for object in payload.objects {
            let path = objects.path(of: object.digest)
            let check = try ModuleFixture.shell("sha256sum '\(path)' | cut -d' ' -f1; stat -c %a '\(path)'")
            #expect(check.stdout == "\(object.digest)\n444\n")
        }
        let stored = try ModuleFixture.shell("find '\(fixture.base)/out/objects' -type f | wc -l")
        #expect(stored.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "5")
        #expect(objects.verify(payload.objects).isEmpty)

        // Version 2 into the same OUT: one changed file, one new object.
        try fixture.write("/bin/db", "#!/bin/sh\necho db v2\n", mode: 0o755)
        let second = try await Self.build(fixture)
        #expect(second.newObjects == 1)
        #expect(second.reusedObjects == 4)
    }

    @Test("the image mounts and serves exactly the source tree")
    func mounts() async throws {
        let fixture = try ModuleFixture.standard()
        defer { fixture.remove() }
        let result = try await Self.build(fixture)
        let run = try Self.inMountedImage(
            fixture, output: result.outputDirectory,
            script: """
                diff -r --no-dereference "$SRC" "$T"
                list() { \(Self.listing); }
                list "$SRC" > /tmp/muster-src-$$; list "$T" > /tmp/muster-img-$$
                diff /tmp/muster-src-$$ /tmp/muster-img-$$; rm -f /tmp/muster-src-$$ /tmp/muster-img-$$
                stat -c '%u:%g' "$T/bin/api"
                "$T/bin/api"
                """)
        #expect(run.status == 0, "stdout: \(run.stdout)\nstderr: \(run.stderr)")
        #expect(run.stdout == "0:0\napi\n")
        // Nothing leaked out of the private namespace.
        let mounts = try String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8)
        #expect(!mounts.contains(fixture.base))
    }

    @Test("a tampered object is served silently by the kernel but caught by ObjectDirectory.verify")
    func tamperedObject() async throws {
        let fixture = try ModuleFixture.standard()
        defer { fixture.remove() }
        let result = try await Self.build(fixture)
        let objects = ObjectDirectory(path: "\(result.outputDirectory)/objects")
        let config = try #require(try ContentDigest.sha256(ofFileAt: fixture.rootfs + "/etc/shop/config.toml"))
        let path = objects.path(of: config.digest)
        #expect(chmod(path, 0o644) == 0)
        try "port = 6666\n".write(toFile: path, atomically: false, encoding: .utf8)  // same size, other bytes

        // The kernel, without fs-verity, hands out the changed bytes…
        let run = try Self.inMountedImage(
            fixture, output: result.outputDirectory, script: #"cat "$T/etc/shop/config.toml""#)
        #expect(run.status == 0)
        #expect(run.stdout == "port = 6666\n")
        // …so user space must refuse the object.
        let problems = objects.verify(result.descriptor.payload.objects)
        #expect(problems.map(\.digest) == [config.digest])
        if case .digestMismatch(_, let actual, _) = problems.first {
            #expect(actual != config.digest)
        } else {
            Issue.record("expected a digest mismatch, got \(problems)")
        }
        let error = #expect(throws: MusterError.self) { try objects.verifyOrThrow(result.descriptor.payload.objects) }
        #expect(error?.code == .digestMismatch)
    }

    @Test("a missing object fails with ENOENT in the mount and is reported as missing")
    func missingObject() async throws {
        let fixture = try ModuleFixture.standard()
        defer { fixture.remove() }
        let result = try await Self.build(fixture)
        let objects = ObjectDirectory(path: "\(result.outputDirectory)/objects")
        let db = try #require(try ContentDigest.sha256(ofFileAt: fixture.rootfs + "/bin/db"))
        #expect(unlink(objects.path(of: db.digest)) == 0)
        let run = try Self.inMountedImage(fixture, output: result.outputDirectory, script: #"cat "$T/bin/db""#)
        #expect(run.status != 0)
        #expect(run.stderr.contains("No such file or directory"))
        #expect(objects.verify(result.descriptor.payload.objects) == [.missing(digest: db.digest)])
        let error = #expect(throws: MusterError.self) { try objects.verifyOrThrow(result.descriptor.payload.objects) }
        #expect(error?.code == .notFound)
    }

    /// This kernel has no fs-verity (TESTING.md): overlay's `verity=require` must fail closed — every
    /// redirected file gives EIO. If this starts passing reads, the kernel changed: switch the builder to
    /// digests in `trusted.overlay.metacopy` and mount with `verity=require`.
    @Test("verity=require fails closed (EIO) on this kernel")
    func verityRequireFailsClosed() async throws {
        let fixture = try ModuleFixture.standard()
        defer { fixture.remove() }
        let result = try await Self.build(fixture)
        let run = try Self.inMountedImage(
            fixture, output: result.outputDirectory, extraOptions: ",verity=require",
            script: #"ls "$T/etc/shop" >/dev/null; cat "$T/etc/shop/config.toml""#)
        #expect(run.status != 0)
        #expect(run.stderr.contains("Input/output error"), "stderr: \(run.stderr)")
        #expect(!run.stdout.contains("port = 8080"))
    }

    @Test("the descriptor verifies with the builder's key and not with another")
    func descriptorSignature() async throws {
        let fixture = try ModuleFixture.standard()
        defer { fixture.remove() }
        let result = try await Self.build(fixture)
        let data = try #require(FileManager.default.contents(atPath: "\(result.outputDirectory)/descriptor.json"))
        let descriptor = try ModuleDescriptor.decode(data, source: "descriptor.json")
        let payload = try descriptor.verify(trustedKeys: [Self.signer.key.publicKey])
        #expect(
            payload.image.digest == (try ContentDigest.sha256(ofFileAt: "\(result.outputDirectory)/meta.erofs"))?.digest
        )
        #expect(throws: MusterError.self) {
            try descriptor.verify(trustedKeys: [Curve25519.Signing.PrivateKey().publicKey])
        }
    }

    @Test("muster module verify accepts an intact build and refuses a changed image, object or key")
    func verifyCommand() async throws {
        let fixture = try ModuleFixture.standard()
        defer { fixture.remove() }
        let keyPath = "\(fixture.base)/k.pem"
        try SecureFile.write(Ed25519PEM.encode(Self.signer.key), to: keyPath, mode: 0o600)
        let result = try await Self.build(fixture)
        let bundle = ModuleBundle(directory: result.outputDirectory)

        let summary = try Muster.ModuleVerify.parse([result.outputDirectory, "--key", keyPath]).verify()
        #expect(summary.name == "shop" && summary.objects == 5)
        #expect(summary.imageDigest == result.descriptor.payload.image.digest)

        let otherKey = "\(fixture.base)/other.pem"
        try SecureFile.write(Ed25519PEM.encode(Curve25519.Signing.PrivateKey()), to: otherKey, mode: 0o600)
        let wrongKey = try #require(throws: MusterError.self) {
            try Muster.ModuleVerify.parse([result.outputDirectory, "--key", otherKey]).verify()
        }
        #expect(wrongKey.code == .verificationFailed)

        // A different (validly built) image under the signed descriptor.
        let image = try #require(FileManager.default.contents(atPath: bundle.imagePath))
        var changed = image
        changed[changed.count - 1] ^= 0xff
        try changed.write(to: URL(fileURLWithPath: bundle.imagePath))
        let imageError = try #require(throws: MusterError.self) {
            try bundle.verify(trustedKeys: [Self.signer.publicKey])
        }
        #expect(imageError.code == .digestMismatch)
        #expect(imageError.message.contains("meta.erofs is not the signed image"))
        try image.write(to: URL(fileURLWithPath: bundle.imagePath))
        #expect(throws: Never.self) { try bundle.verify(trustedKeys: [Self.signer.publicKey]) }

        let object = try #require(result.descriptor.payload.objects.first)
        let path = bundle.objects.path(of: object.digest)
        #expect(chmod(path, 0o644) == 0)
        try Data(repeating: 0x41, count: Int(object.size)).write(to: URL(fileURLWithPath: path))
        let objectError = try #require(throws: MusterError.self) {
            try Muster.ModuleVerify.parse([result.outputDirectory, "--key", keyPath]).verify()
        }
        #expect(objectError.code == .digestMismatch)
        #expect(objectError.message.contains(object.digest))
    }

    @Test("an invalid module is refused before anything is written")
    func invalidModule() async throws {
        let fixture = try ModuleFixture.standard()
        defer { fixture.remove() }
        try fixture.writeManifest(
            ModuleFixture.twoServiceManifest.replacingOccurrences(of: "after: [db]", with: "after: [cache]"))
        let error = try await #require(throws: ModuleManifest.ValidationError.self) { try await Self.build(fixture) }
        #expect(error.issues.map(\.field) == ["services[0].after[0]"])
        #expect(!FileManager.default.fileExists(atPath: "\(fixture.base)/out"))
    }

    @Test("an output directory inside rootfs/ is refused")
    func outputInsideRootfs() async throws {
        let fixture = try ModuleFixture.standard()
        defer { fixture.remove() }
        let error = try await #require(throws: MusterError.self) {
            try await ModuleBuilder(logger: Logger(label: "test")).build(
                moduleDirectory: fixture.directory, outputDirectory: fixture.rootfs + "/out", signer: Self.signer)
        }
        #expect(error.code == .usage)
    }

    @Test("muster module build --key writes OUT and prints JSON; a missing key is a clear error")
    func command() async throws {
        let fixture = try ModuleFixture.standard()
        defer { fixture.remove() }
        let keyPath = "\(fixture.base)/module-signing.key"
        try SecureFile.write(Ed25519PEM.encode(Self.signer.key), to: keyPath, mode: 0o600)
        let command = try Muster.ModuleBuild.parse([
            fixture.directory, "-o", "\(fixture.base)/cli", "--key", keyPath, "--json",
        ])
        let result = try await command.build()
        let summary = Muster.ModuleBuild.summary(result)
        #expect(summary.name == "shop" && summary.version == "1.0.0")
        #expect(summary.keyID == Self.signer.keyID)
        #expect(summary.objects == 5)
        let json = try Muster.ModuleBuild.render(result, json: true)
        #expect(json.contains("\"imageDigest\" : \"\(result.descriptor.payload.image.digest)\""))
        for file in ["meta.erofs", "descriptor.json", "objects"] {
            #expect(FileManager.default.fileExists(atPath: "\(fixture.base)/cli/\(file)"))
        }

        // --state-dir reads <state-dir>/pki/module-signing.key, the file CertificateAuthority creates.
        let state = "\(fixture.base)/state"
        try FileManager.default.createDirectory(atPath: "\(state)/pki", withIntermediateDirectories: true)
        try SecureFile.write(Ed25519PEM.encode(Self.signer.key), to: "\(state)/pki/module-signing.key", mode: 0o600)
        let viaState = try await Muster.ModuleBuild.parse([
            fixture.directory, "-o", "\(fixture.base)/cli2", "--state-dir", state,
        ]).build()
        #expect(viaState.descriptor == result.descriptor)

        let missing = try Muster.ModuleBuild.parse([fixture.directory, "--state-dir", "\(fixture.base)/nowhere"])
        let error = try await #require(throws: MusterError.self) { try await missing.build() }
        #expect(error.code == .notFound)
        #expect(error.hint?.contains("--key") == true)
        #expect(throws: (any Error).self) {
            try Muster.ModuleBuild.parse([fixture.directory, "--state-dir", state, "--key", keyPath])
        }
    }

    /// The built `muster` executable: next to the test bundle (SwiftPM puts both in the bin path).
    static var musterExecutable: String {
        if let dir = ProcessInfo.processInfo.environment["MUSTER_BIN_DIR"], !dir.isEmpty { return "\(dir)/muster" }
        let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? ""
        return "\((exe as NSString).deletingLastPathComponent)/muster"
    }

    @Test("a full disk fails the build cleanly: exit 1, no partial or misnamed object, no descriptor")
    func diskFull() throws {
        let fixture = try ModuleFixture.standard()
        defer { fixture.remove() }
        let muster = Self.musterExecutable
        try #require(FileManager.default.isExecutableFile(atPath: muster), "\(muster) missing: swift build first")
        let keyPath = "\(fixture.base)/k.pem"
        try SecureFile.write(Ed25519PEM.encode(Self.signer.key), to: keyPath, mode: 0o600)
        let out = "\(fixture.base)/small"
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        // 256 KiB of tmpfs: the small objects fit, the 1.1 MB one does not.
        let script = """
            mount -t tmpfs -o size=256k tmpfs '\(out)' || exit 99
            '\(muster)' module build '\(fixture.directory)' -o '\(out)' --key '\(keyPath)' 2>'\(fixture.base)/stderr'
            echo "status=$?"
            find '\(out)' \\( -name '.tmp-*' -o -name '.meta.erofs.*' -o -name '.skeleton-*' \\) -printf 'leftover %P\\n'
            for f in '\(out)'/objects/*/*; do
                name="$(basename "$(dirname "$f")")$(basename "$f")"
                [ "$(sha256sum "$f" | cut -d' ' -f1)" = "$name" ] && echo ok || echo "bad $f"
            done
            [ -e '\(out)/descriptor.json' ] && echo descriptor
            [ -e '\(out)/meta.erofs' ] && echo image
            exit 0
            """
        let quoted = script.replacingOccurrences(of: "'", with: "'\\''")
        let run = try ModuleFixture.shell("unshare -m --propagation private sh -c '\(quoted)'")
        #expect(run.status == 0, "\(run.stderr)")
        let lines = run.stdout.split(separator: "\n").map(String.init)
        #expect(lines.first == "status=1")
        #expect(lines.dropFirst() == ["ok", "ok", "ok", "ok"], "\(run.stdout)")
        let stderr = (try? String(contentsOfFile: "\(fixture.base)/stderr", encoding: .utf8)) ?? ""
        #expect(stderr.contains("No space left on device"), "\(stderr)")
        #expect(stderr.contains("hint: free space"))
    }

    @Test("without CAP_SYS_ADMIN the build stops early with a hint to run as root")
    func notRoot() throws {
        let fixture = try ModuleFixture.standard()
        defer { fixture.remove() }
        let muster = Self.musterExecutable
        try #require(FileManager.default.isExecutableFile(atPath: muster), "\(muster) missing: swift build first")
        let keyPath = "\(fixture.base)/k.pem"
        try SecureFile.write(Ed25519PEM.encode(Self.signer.key), to: keyPath, mode: 0o644)  // readable by nobody
        let out = "\(fixture.base)/out-nobody"
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        let run = try ModuleFixture.shell(
            """
            chmod 755 '\(fixture.base)' && chown 65534:65534 '\(out)' && \
            setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=-all \
              '\(muster)' module build '\(fixture.directory)' -o '\(out)' --key '\(keyPath)' --json
            """)
        #expect(run.status == 1, "\(run.stdout)\n\(run.stderr)")
        #expect(run.stdout.contains("\"code\" : \"FORBIDDEN\""), "\(run.stdout)")
        #expect(run.stdout.contains("run `muster module build` as root"))
        // Stopped before copying anything.
        let objects = try FileManager.default.contentsOfDirectory(atPath: "\(out)/objects")
        #expect(objects.isEmpty)
    }

    @Test("the default output is ./NAME-VERSION.module")
    func defaultOutput() async throws {
        let fixture = try ModuleFixture.standard()
        defer { fixture.remove() }
        let keyPath = "\(fixture.base)/k.pem"
        try SecureFile.write(Ed25519PEM.encode(Self.signer.key), to: keyPath, mode: 0o600)
        let previous = FileManager.default.currentDirectoryPath
        #expect(FileManager.default.changeCurrentDirectoryPath(fixture.base))
        defer { _ = FileManager.default.changeCurrentDirectoryPath(previous) }
        let result = try await Muster.ModuleBuild.parse([fixture.directory, "--key", keyPath]).build()
        #expect(result.outputDirectory == "\(fixture.base)/shop-1.0.0.module")
    }
}
