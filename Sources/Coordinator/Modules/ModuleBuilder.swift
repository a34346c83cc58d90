import CXattr
import Crypto
import Foundation
import Logging
import Shared
import Subprocess
import SystemPackage

#if canImport(Glibc)
    import Glibc
#endif

/// Builds a module directory into a composefs-style image (DESIGN §5, `muster module build`).
///
/// Input `DIR`: `module.yaml` and `rootfs/` (the files, `exec[0]: /bin/server` is `rootfs/bin/server`).
/// Output `OUT`:
/// - `objects/ab/cdef…` — every non-empty regular file once, named by the sha256 of its content, mode 0444;
///   objects already in `OUT/objects` (an earlier version built into the same `OUT`) are reused.
/// - `meta.erofs` — an EROFS image of a skeleton tree: directories, symlinks and, for each non-empty file, an
///   empty sparse file of the right size carrying `trusted.overlay.metacopy` (empty) and
///   `trusted.overlay.redirect` (`/ab/cdef…`), so `lowerdir=META::OBJECTS` overlay serves the object's bytes.
/// - `descriptor.json` — the signed ``ModuleDescriptor``.
///
/// Reproducible: `mkfs.erofs -T0 -U <uuid from the content> --all-root`, names sorted, skeleton mtimes 0, so
/// the same input gives the same `meta.erofs` digest and — Ed25519 being deterministic — the same descriptor.
/// The image records no owners (all root: services get their user from the manifest) and no source xattrs;
/// file modes keep their 0777 bits (setuid, setgid and sticky are dropped), directories keep 01777.
///
/// Writing `trusted.*` xattrs needs `CAP_SYS_ADMIN`, so building runs as root.
struct ModuleBuilder {
    /// Build options.
    struct Options: Sendable {
        /// The `mkfs.erofs` executable (a name is looked up in `PATH`), from erofs-utils ≥ 1.5.
        var mkfsErofs: String = "mkfs.erofs"
        init() {}
    }

    /// What a build produced.
    struct Result: Sendable {
        var descriptor: ModuleDescriptor
        var outputDirectory: String
        /// Objects copied by this build.
        var newObjects: Int
        /// Objects that were already in `OUT/objects`.
        var reusedObjects: Int
    }

    static let manifestFileName = "module.yaml"
    static let rootfsDirectoryName = "rootfs"

    var options = Options()
    let logger: Logger

    init(options: Options = Options(), logger: Logger) {
        self.options = options
        self.logger = logger
    }

    // MARK: - Build

    /// Validates `moduleDirectory` and builds it into `outputDirectory`, signed by `signer`.
    ///
    /// - Throws: ``ModuleManifest/ValidationError`` (every problem with the manifest and the tree at once);
    ///   `MusterError` `.forbidden` without `CAP_SYS_ADMIN`, `.io` for file problems (a failed write leaves no
    ///   partial object: objects are written to a temporary name and renamed), `.internal` when mkfs.erofs fails.
    func build(moduleDirectory: String, outputDirectory: String, signer: DescriptorSigner) async throws
        -> Result
    {
        let directory = Self.standardized(moduleDirectory)
        let output = ModuleBundle(directory: Self.standardized(outputDirectory))
        let (manifest, tree) = try Self.load(moduleDirectory: directory)

        let rootfs = "\(directory)/\(Self.rootfsDirectoryName)"
        if output.directory == rootfs || output.directory.hasPrefix(rootfs + "/") {
            throw MusterError(.usage, "the output directory \(output.directory) must not be inside \(rootfs)")
        }
        try SecureFile.makeDirectory(output.directory, mode: 0o755)
        try SecureFile.makeDirectory(output.objects.path, mode: 0o755)

        let skeleton = "\(output.directory)/.skeleton-\(UInt32.random(in: 0...UInt32.max))"
        guard mkdir(skeleton, 0o700) == 0 else { throw Self.posixError("create", skeleton) }
        defer { try? FileManager.default.removeItem(atPath: skeleton) }
        try Self.probeTrustedXattrs(in: skeleton)

        // Objects first (the skeleton needs their names), then the skeleton, then the image.
        let objects = output.objects
        var digests: [String: ModuleDescriptor.Object] = [:]  // in-module path → object
        var stored: Set<ModuleDescriptor.Object> = []
        var newObjects = 0
        var reusedObjects = 0
        for entry in tree.entries where entry.kind == .regularFile && entry.size > 0 {
            let source = tree.root + entry.path
            guard let (digest, size) = try ContentDigest.sha256(ofFileAt: source) else {
                throw MusterError(.io, "\(source) disappeared while building")
            }
            let object = ModuleDescriptor.Object(digest: digest, size: size)
            digests[entry.path] = object
            guard stored.insert(object).inserted else { continue }
            if try Self.storeObject(object, from: source, in: objects) { newObjects += 1 } else { reusedObjects += 1 }
        }

        try Self.makeSkeleton(tree: tree, objects: digests, at: skeleton)
        let uuid = Self.imageUUID(manifest: manifest, objects: stored)
        let (imageDigest, imageSize) = try await makeImage(skeleton: skeleton, uuid: uuid, at: output.imagePath)

        let payload = ModuleDescriptor.Payload(
            manifest: manifest, image: .init(digest: imageDigest, size: imageSize), objects: Array(stored))
        let descriptor = try signer.sign(payload)
        try SecureFile.write(
            String(decoding: try descriptor.encoded(), as: UTF8.self) + "\n", to: output.descriptorPath, mode: 0o644)
        logger.info(
            "built module",
            metadata: [
                "module": "\(manifest.name)@\(manifest.version)", "image": "\(imageDigest)",
                "objects": "\(stored.count)", "new": "\(newObjects)",
            ])
        return Result(
            descriptor: descriptor, outputDirectory: output.directory, newObjects: newObjects,
            reusedObjects: reusedObjects)
    }

    /// Reads and validates `DIR/module.yaml` against `DIR/rootfs`, reporting manifest and tree problems together.
    ///
    /// - Throws: ``ModuleManifest/ValidationError``, or `MusterError` `.notFound` when a part is missing.
    static func load(moduleDirectory directory: String) throws -> (ModuleManifest, ModuleTree) {
        let manifestPath = "\(directory)/\(manifestFileName)"
        guard let data = FileManager.default.contents(atPath: manifestPath) else {
            throw MusterError(
                .notFound, "\(manifestPath) does not exist or cannot be read",
                hint: "a module directory holds module.yaml and rootfs/ (see docs/modules.md)")
        }
        guard let yaml = String(data: data, encoding: .utf8) else {
            throw ModuleManifest.ValidationError(issues: [
                .init(file: manifestPath, field: "", reason: "is not UTF-8 text")
            ])
        }
        var issues: [ModuleManifest.Issue] = []
        var parsed: ModuleManifest.Parsed?
        do {
            parsed = try ModuleManifest.parse(yaml: yaml, file: manifestPath)
        } catch let error as ModuleManifest.ValidationError {
            issues += error.issues
        }
        let (tree, treeIssues) = try ModuleTree.scanReportingIssues(root: "\(directory)/\(rootfsDirectoryName)")
        issues += treeIssues
        if let parsed {
            issues += parsed.manifest.validate(file: manifestPath, lines: parsed.lines, tree: tree)
        }
        guard issues.isEmpty, let parsed else { throw ModuleManifest.ValidationError(issues: issues) }
        return (parsed.manifest, tree)
    }

    // MARK: - Objects

    /// Copies `source` into the object directory unless an object of that name and size is already there.
    ///
    /// The copy goes to a temporary file in `objects/` that is renamed into place only after the whole content
    /// was written and hashed again, so a full disk or a file changing under us leaves no wrong object.
    ///
    /// - Returns: Whether the object was new.
    static func storeObject(_ object: ModuleDescriptor.Object, from source: String, in objects: ObjectDirectory) throws
        -> Bool
    {
        let destination = objects.path(of: object.digest)
        if let existing = FileStatus.lstat(destination), existing.kind == .regular, existing.size == object.size {
            return false
        }
        let fanOut = "\(objects.path)/\(object.digest.prefix(2))"
        if mkdir(fanOut, 0o755) != 0, errno != EEXIST { throw posixError("create", fanOut) }

        let temporary = "\(objects.path)/.tmp-\(object.digest.prefix(16))-\(UInt32.random(in: 0...UInt32.max))"
        _ = try hashCopy(from: source, via: temporary, to: destination, mode: 0o444) { copied in
            guard copied.digest == object.digest, copied.size == object.size else {
                throw MusterError(.io, "\(source) changed while the module was being built", hint: "build again")
            }
        }
        return true
    }

    /// Copies `source` (not through a symlink) into a new file `temporary` while hashing it, lets `check` refuse
    /// what was copied, makes it `mode` and renames it to `destination`. On any failure the temporary file is
    /// removed, so `destination` only ever holds a complete copy.
    ///
    /// - Returns: the bytes copied and their sha256.
    static func hashCopy(
        from source: String, via temporary: String, to destination: String, mode: mode_t,
        check: ((size: UInt64, digest: String)) throws -> Void = { _ in }
    ) throws -> (size: UInt64, digest: String) {
        let input = open(source, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
        guard input >= 0 else { throw posixError("open", source) }
        defer { close(input) }
        let outputFD = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard outputFD >= 0 else { throw posixError("create", temporary) }
        var committed = false
        defer {
            close(outputFD)
            if !committed { unlink(temporary) }
        }
        let copied: (size: UInt64, digest: String)
        do {
            copied = try HashingCopy.copy(from: input, to: outputFD)
        } catch .read(let code) {
            errno = code
            throw posixError("read", source)
        } catch .write(let code) {
            errno = code
            throw posixError("write", temporary)
        }
        try check(copied)
        guard fchmod(outputFD, mode) == 0 else { throw posixError("chmod", temporary) }
        guard rename(temporary, destination) == 0 else { throw posixError("rename into place", destination) }
        committed = true
        return copied
    }

    // MARK: - Skeleton and image

    /// Creates the skeleton tree that mkfs.erofs turns into the metadata image.
    static func makeSkeleton(tree: ModuleTree, objects: [String: ModuleDescriptor.Object], at skeleton: String) throws {
        for entry in tree.entries where entry.path != "/" {
            let path = skeleton + entry.path
            switch entry.kind {
            case .directory:
                guard mkdir(path, 0o700) == 0 else { throw posixError("create", path) }
            case .symlink(let target):
                guard symlink(target, path) == 0 else { throw posixError("create symlink", path) }
            case .regularFile:
                let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
                guard fd >= 0 else { throw posixError("create", path) }
                defer { close(fd) }
                guard let object = objects[entry.path] else { continue }  // empty file: no object, no xattrs
                guard ftruncate(fd, off_t(object.size)) == 0 else { throw posixError("size", path) }
                try setXattr(fd: fd, name: "trusted.overlay.metacopy", value: [], path: path)
                try setXattr(
                    fd: fd, name: "trusted.overlay.redirect",
                    value: Array("/\(ObjectDirectory.relativePath(of: object.digest))".utf8), path: path)
            }
        }
        // Modes and times last and children first: creating an entry changes its directory's mtime.
        for entry in tree.entries.reversed() {
            let path = entry.path == "/" ? skeleton : skeleton + entry.path
            switch entry.kind {
            case .directory:
                guard chmod(path, mode_t(entry.mode & 0o1777)) == 0 else { throw posixError("chmod", path) }
            case .regularFile:
                guard chmod(path, mode_t(entry.mode & 0o777)) == 0 else { throw posixError("chmod", path) }
            case .symlink:
                break
            }
            guard FileStatus.setEpochTimes(path) else { throw posixError("set times", path) }
        }
    }

    /// Makes the metadata image and puts it at `destination` (through a temporary name in its directory).
    ///
    /// mkfs.erofs writes into a scratch directory in `/tmp`, and the image is then copied into place: in chunked
    /// mode erofs-utils 1.5 keeps the chunk table in a `tmpfile()` (always in `/tmp`, `TMPDIR` is not read) and
    /// moves it into the image with `copy_file_range`, which fails with EXDEV — reported only as "Could not format
    /// the device: Input/output error" — when the image is on another filesystem than `/tmp`.
    ///
    /// - Returns: the image's sha256 and size, taken from the bytes copied into place.
    func makeImage(skeleton: String, uuid: String, at destination: String) async throws -> (String, UInt64) {
        var template = Array("/tmp/muster-mkfs-XXXXXX".utf8CString)
        guard template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) != nil else {
            throw Self.posixError("create a scratch directory in", "/tmp")
        }
        let scratch = String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        let built = "\(scratch)/meta.erofs"
        try await runMkfs(image: built, skeleton: skeleton, uuid: uuid)

        let directory = (destination as NSString).deletingLastPathComponent
        let temporary = "\(directory)/.meta.erofs.\(UInt32.random(in: 0...UInt32.max))"
        let copied = try Self.hashCopy(from: built, via: temporary, to: destination, mode: 0o644)
        return (copied.digest, copied.size)
    }

    /// Runs `mkfs.erofs --quiet --chunksize=4096 -T0 -U UUID --all-root IMAGE SKELETON`.
    ///
    /// `--chunksize=4096` keeps the sparse files sparse (without it the image stores their zeros); `-T0` fixes
    /// every timestamp and `-U` the filesystem UUID, so the image depends on the skeleton only.
    func runMkfs(image: String, skeleton: String, uuid: String) async throws {
        let arguments = ["--quiet", "--chunksize=4096", "-T0", "-U", uuid, "--all-root", image, skeleton]
        let executable: Executable =
            options.mkfsErofs.contains("/") ? .path(.init(options.mkfsErofs)) : .name(options.mkfsErofs)
        let result: ExecutionRecord
        do {
            let run = try await Subprocess.run(
                executable, arguments: Arguments(arguments), output: .string(limit: 1 << 16),
                error: .string(limit: 1 << 16))
            result = ExecutionRecord(
                status: run.terminationStatus, output: run.standardOutput, error: run.standardError)
        } catch {
            throw MusterError(
                .internal, "cannot run \(options.mkfsErofs)", hint: "install erofs-utils (apt-get install erofs-utils)",
                cause: UnderlyingError(error))
        }
        logger.debug("mkfs.erofs finished", metadata: ["arguments": "\(arguments)", "stderr": "\(result.error)"])
        guard result.status.isSuccess else {
            throw MusterError(
                .internal,
                "mkfs.erofs failed (\(result.status)): \(result.error.trimmingCharacters(in: .whitespacesAndNewlines))")
        }
    }

    private struct ExecutionRecord {
        var status: TerminationStatus
        var output: String
        var error: String
    }

    /// A UUID derived from the module's identity and content, so it is stable across builds of the same input.
    static func imageUUID(manifest: ModuleManifest, objects: Set<ModuleDescriptor.Object>) -> String {
        var hasher = SHA256()
        hasher.update(data: Array("\(manifest.name)\n\(manifest.version)\n".utf8))
        for object in objects.sorted() { hasher.update(data: Array("\(object.digest) \(object.size)\n".utf8)) }
        var bytes = Array(hasher.finalize().prefix(16))
        bytes[6] = (bytes[6] & 0x0f) | 0x50  // version 5 style (name-based, SHA)
        bytes[8] = (bytes[8] & 0x3f) | 0x80  // RFC 4122 variant
        let hex = ContentDigest.hex(bytes)
        let parts = [
            hex.prefix(8), hex.dropFirst(8).prefix(4), hex.dropFirst(12).prefix(4), hex.dropFirst(16).prefix(4),
            hex.dropFirst(20),
        ]
        return parts.joined(separator: "-")
    }

    /// Fails early and clearly when trusted xattrs cannot be written (not root, or a filesystem without them).
    static func probeTrustedXattrs(in skeleton: String) throws {
        let probe = "\(skeleton)/.probe"
        let fd = open(probe, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw posixError("create", probe) }
        defer {
            close(fd)
            unlink(probe)
        }
        try setXattr(fd: fd, name: "trusted.overlay.metacopy", value: [], path: probe)
    }

    private static func setXattr(fd: Int32, name: String, value: [UInt8], path: String) throws {
        let result = value.withUnsafeBytes { fsetxattr(fd, name, $0.baseAddress, $0.count, 0) }
        guard result == 0 else {
            let code = errno
            if code == EPERM {
                throw MusterError(
                    .forbidden, "cannot set \(name) on \(path): writing trusted.* xattrs needs CAP_SYS_ADMIN",
                    hint: "run `muster module build` as root")
            }
            if code == ENOTSUP {
                throw MusterError(
                    .io, "cannot set \(name) on \(path): the filesystem does not support xattrs",
                    hint: "put the output directory on ext4, xfs, btrfs or tmpfs")
            }
            errno = code
            throw posixError("set \(name) on", path)
        }
    }

    static func posixError(_ action: String, _ path: String) -> MusterError {
        let code = errno
        let hint: String? = code == ENOSPC ? "free space on the output filesystem and build again" : nil
        return MusterError(.io, "cannot \(action) \(path): \(String(cString: strerror(code)))", hint: hint)
    }

    static func standardized(_ path: String) -> String {
        let absolute = path.hasPrefix("/") ? path : FileManager.default.currentDirectoryPath + "/" + path
        return URL(fileURLWithPath: absolute).standardizedFileURL.path
    }
}
