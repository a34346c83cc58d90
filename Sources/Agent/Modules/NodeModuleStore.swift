import Crypto
import Foundation
import Shared

#if canImport(Glibc)
    import Glibc
#endif

/// A node's module store under `<state-dir>/modules/`.
///
/// The first three directories are a contract with the object fetcher (issue 3, item 4), which fills them:
/// ```
/// objects/                       ObjectDirectory layout (objects/ab/cdef…), files 0444, shared by every module
///                                and version
/// images/<image-digest>.erofs    0444
/// descriptors/<image-digest>.json the signed ModuleDescriptor JSON as published
/// ```
/// The rest belongs to ``ModuleAttacher``: `attached/<module>.json` (what is attached), `mnt/` (mount points),
/// `current/<module>` (symlink to the attached version's tree) and `verified.json` (the verification cache).
///
/// Files whose name starts with `.` are temporary files of a writer in progress; ``garbageCollect(keeping:)``
/// leaves them alone.
struct NodeModuleStore: Sendable {
    /// `<state-dir>/modules`.
    let root: String

    init(stateDirectory: String) { self.root = "\(stateDirectory)/modules" }

    init(root: String) { self.root = root }

    var objects: ObjectDirectory { ObjectDirectory(path: "\(root)/objects") }
    var imagesDirectory: String { "\(root)/images" }
    var descriptorsDirectory: String { "\(root)/descriptors" }
    var attachedDirectory: String { "\(root)/attached" }
    var mountsDirectory: String { "\(root)/mnt" }
    var currentDirectory: String { "\(root)/current" }
    var verificationCachePath: String { "\(root)/verified.json" }

    func imagePath(_ imageDigest: String) -> String { "\(imagesDirectory)/\(imageDigest).erofs" }
    func descriptorPath(_ imageDigest: String) -> String { "\(descriptorsDirectory)/\(imageDigest).json" }

    /// Creates the store's directories (0755).
    /// - Throws: `MusterError` `.io`.
    func prepare() throws {
        for directory in [
            root, objects.path, imagesDirectory, descriptorsDirectory, attachedDirectory, mountsDirectory,
            currentDirectory,
        ] {
            do {
                try FileManager.default.createDirectory(
                    atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
            } catch {
                throw MusterError(.io, "cannot create \(directory): \(error)", cause: UnderlyingError(error))
            }
        }
    }

    // MARK: - Reading

    /// The stored descriptor of an image (not verified: ``ModuleAttacher`` verifies it).
    /// - Throws: `MusterError` `.invalidInput` for a digest that is not a sha256, `.notFound`, `.invalidInput`.
    func loadDescriptor(imageDigest: String) throws -> ModuleDescriptor {
        guard ObjectDirectory.isDigest(imageDigest) else {
            throw MusterError(.invalidInput, "\"\(imageDigest)\" is not an image digest (lowercase hex sha256)")
        }
        let path = descriptorPath(imageDigest)
        guard let data = FileManager.default.contents(atPath: path) else {
            throw MusterError(
                .notFound, "module image \(imageDigest) is not on this node (no \(path))",
                hint: "transfer the module to the node first")
        }
        return try ModuleDescriptor.decode(data, source: path)
    }

    /// The objects of `payload` that are not in the store (absent; their content is not checked here).
    func missingObjects(of payload: ModuleDescriptor.Payload) -> [ModuleDescriptor.Object] {
        payload.objects.filter { object in
            guard ObjectDirectory.isDigest(object.digest) else { return true }
            return FileStatus.lstat(objects.path(of: object.digest))?.kind != .regular
        }
    }

    /// Image digests that have a descriptor in the store.
    func storedImages() -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: descriptorsDirectory)) ?? []
        return names.compactMap { name in
            guard name.hasSuffix(".json") else { return nil }
            let digest = String(name.dropLast(5))
            return ObjectDirectory.isDigest(digest) ? digest : nil
        }.sorted()
    }

    // MARK: - Installing a local bundle

    /// Copies a bundle built by `muster module build` into the store: every object (re-hashed while copying,
    /// written to a temporary name, made 0444, renamed into place), the image and the descriptor. Objects already
    /// in the store are not copied again. Nothing is trusted here: attach verifies signature and content.
    ///
    /// - Returns: the bundle's descriptor.
    /// - Throws: `MusterError` `.notFound` (a file of the bundle is missing), `.digestMismatch` (an object's content
    ///   does not match its name), `.io`.
    @discardableResult
    func install(bundle: ModuleBundle) throws -> ModuleDescriptor {
        try prepare()
        let descriptor = try bundle.loadDescriptor()
        let payload = descriptor.payload
        guard ObjectDirectory.isDigest(payload.image.digest) else {
            throw MusterError(.invalidInput, "\(bundle.descriptorPath): image digest is not a sha256")
        }
        for object in payload.objects {
            guard ObjectDirectory.isDigest(object.digest) else {
                throw MusterError(
                    .invalidInput, "\(bundle.descriptorPath): object \"\(object.digest)\" is not a sha256")
            }
            let target = objects.path(of: object.digest)
            if FileStatus.lstat(target)?.kind == .regular { continue }
            try Self.copyFile(
                from: bundle.objects.path(of: object.digest), to: target, expectedDigest: object.digest)
        }
        try Self.copyFile(
            from: bundle.imagePath, to: imagePath(payload.image.digest), expectedDigest: payload.image.digest)
        let descriptorTarget = descriptorPath(payload.image.digest)
        if FileStatus.lstat(descriptorTarget) == nil {
            try Self.copyFile(from: bundle.descriptorPath, to: descriptorTarget, expectedDigest: nil)
        }
        return descriptor
    }

    /// Copies `source` to a temporary file next to `target`, checks its sha256 against `expectedDigest` (when
    /// given), makes it 0444, fsyncs and renames it into place: a failure leaves no partial file under the name.
    static func copyFile(from source: String, to target: String, expectedDigest: String?) throws {
        let directory = (target as NSString).deletingLastPathComponent
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw MusterError(.io, "cannot create \(directory): \(error)", cause: UnderlyingError(error))
        }
        let input = open(source, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
        guard input >= 0 else {
            if errno == ENOENT { throw MusterError(.notFound, "\(source) does not exist") }
            throw ioError("open", source)
        }
        defer { close(input) }
        let temporary = "\(directory)/.tmp-\(UInt32.random(in: 0...UInt32.max))"
        let output = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard output >= 0 else { throw ioError("create", temporary) }
        var renamed = false
        defer {
            if !renamed { unlink(temporary) }
        }
        do {
            defer { close(output) }
            let copied: (size: UInt64, digest: String)
            do {
                copied = try HashingCopy.copy(from: input, to: output)
            } catch .read(let code) {
                errno = code
                throw ioError("read", source)
            } catch .write(let code) {
                errno = code
                throw ioError("write", temporary)
            }
            if let expectedDigest {
                let actual = copied.digest
                guard actual == expectedDigest else {
                    throw MusterError(
                        .digestMismatch, "\(source) has content with sha256 \(actual), expected \(expectedDigest)",
                        hint: "rebuild the module")
                }
            }
            guard fchmod(output, 0o444) == 0 else { throw ioError("chmod", temporary) }
            guard fsync(output) == 0 else { throw ioError("fsync", temporary) }
        }
        guard rename(temporary, target) == 0 else { throw ioError("rename", target) }
        renamed = true
    }

    // MARK: - Garbage collection

    /// What ``garbageCollect(keeping:)`` removed.
    struct CollectionReport: Sendable, Equatable {
        var images: [String] = []
        var objects: Int = 0
        var bytes: UInt64 = 0
    }

    /// Removes every image and descriptor whose image digest is not in `referenced`, and every object that no
    /// kept descriptor lists. Temporary files (names starting with `.`) are left alone.
    ///
    /// - Parameter referenced: image digests to keep (those of attached modules).
    /// - Throws: `MusterError` `.io` when a kept descriptor cannot be read (then nothing is removed: an unreadable
    ///   descriptor must not make its objects look unreferenced).
    @discardableResult
    func garbageCollect(keeping referenced: Set<String>) throws -> CollectionReport {
        var keptObjects = Set<String>()
        for digest in referenced {
            let descriptor: ModuleDescriptor
            do {
                descriptor = try loadDescriptor(imageDigest: digest)
            } catch {
                throw MusterError(
                    .io, "cannot read the descriptor of kept image \(digest); not collecting garbage",
                    cause: error as? MusterError)
            }
            for object in descriptor.payload.objects { keptObjects.insert(object.digest) }
        }
        var report = CollectionReport()
        for digest in storedImagesAndDescriptors() where !referenced.contains(digest) {
            for path in [imagePath(digest), descriptorPath(digest)] where FileStatus.lstat(path) != nil {
                guard unlink(path) == 0 else { throw Self.ioError("unlink", path) }
            }
            report.images.append(digest)
        }
        let fanOuts = (try? FileManager.default.contentsOfDirectory(atPath: objects.path)) ?? []
        for fanOut in fanOuts.sorted() where fanOut.utf8.count == 2 && !fanOut.hasPrefix(".") {
            let directory = "\(objects.path)/\(fanOut)"
            let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
            var left = 0
            for name in names {
                let digest = fanOut + name
                guard !name.hasPrefix("."), ObjectDirectory.isDigest(digest), !keptObjects.contains(digest) else {
                    left += 1
                    continue
                }
                let path = "\(directory)/\(name)"
                let size = FileStatus.lstat(path)?.size ?? 0
                guard unlink(path) == 0 else { throw Self.ioError("unlink", path) }
                report.objects += 1
                report.bytes += size
            }
            if left == 0 { rmdir(directory) }
        }
        report.images.sort()
        return report
    }

    /// Digests named by an image or a descriptor file.
    private func storedImagesAndDescriptors() -> Set<String> {
        var digests = Set(storedImages())
        let images = (try? FileManager.default.contentsOfDirectory(atPath: imagesDirectory)) ?? []
        for name in images where name.hasSuffix(".erofs") {
            let digest = String(name.dropLast(6))
            if ObjectDirectory.isDigest(digest) { digests.insert(digest) }
        }
        return digests
    }

    static func ioError(_ what: String, _ path: String) -> MusterError {
        let code = errno
        return MusterError(.io, "\(what) \(path): \(String(cString: strerror(code)))")
    }
}
