import Crypto
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// A directory of content-addressed module objects: each file is named by the sha256 of its content,
/// `OBJECTS/ab/cdef…` (composefs' layout), so a file shared by modules and versions is stored once.
///
/// The kernel cannot check these names here (no fs-verity: overlay serves a changed object silently), so
/// ``verify(_:)`` re-hashes objects in user space before an image that points at them is trusted.
public struct ObjectDirectory: Sendable {
    /// The directory holding the `ab/` fan-out directories.
    public let path: String

    public init(path: String) { self.path = path }

    /// `ab/cdef…` for a digest, the object's path relative to ``path`` (and the overlay redirect without
    /// its leading `/`).
    public static func relativePath(of digest: String) -> String {
        "\(digest.prefix(2))/\(digest.dropFirst(2))"
    }

    /// The object's absolute path.
    public func path(of digest: String) -> String { "\(path)/\(Self.relativePath(of: digest))" }

    /// Whether `text` is a lowercase hex sha256 (64 characters).
    public static func isDigest(_ text: String) -> Bool {
        text.utf8.count == 64
            && text.utf8.allSatisfy {
                ($0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9"))
                    || ($0 >= UInt8(ascii: "a") && $0 <= UInt8(ascii: "f"))
            }
    }

    /// What is wrong with one object.
    public enum Problem: Sendable, Equatable, CustomStringConvertible {
        case missing(digest: String)
        /// The content hashes to something else: the object was changed or truncated.
        case digestMismatch(digest: String, actual: String, size: UInt64)
        case sizeMismatch(digest: String, expected: UInt64, actual: UInt64)
        case unreadable(digest: String, reason: String)

        public var digest: String {
            switch self {
            case .missing(let d), .digestMismatch(let d, _, _), .sizeMismatch(let d, _, _), .unreadable(let d, _): d
            }
        }

        public var description: String {
            switch self {
            case .missing(let digest): "object \(digest) is missing"
            case .digestMismatch(let digest, let actual, _): "object \(digest) has content with sha256 \(actual)"
            case .sizeMismatch(let digest, let expected, let actual):
                "object \(digest) is \(actual) bytes, expected \(expected)"
            case .unreadable(let digest, let reason): "object \(digest) cannot be read: \(reason)"
            }
        }
    }

    /// Re-hashes every listed object and reports the ones that are missing or do not match their name/size.
    ///
    /// - Returns: The problems, in the order of `objects`; empty when all objects are intact.
    public func verify(_ objects: [ModuleDescriptor.Object]) -> [Problem] {
        var problems: [Problem] = []
        for object in objects {
            if let problem = check(object) { problems.append(problem) }
        }
        return problems
    }

    /// Like ``verify(_:)`` but throws on the first problem.
    ///
    /// - Throws: `MusterError` `.notFound` for a missing object, `.digestMismatch` for a changed one, `.io`.
    public func verifyOrThrow(_ objects: [ModuleDescriptor.Object]) throws {
        guard let problem = verify(objects).first else { return }
        switch problem {
        case .missing:
            throw MusterError(.notFound, problem.description, hint: "fetch the object again")
        case .digestMismatch, .sizeMismatch:
            throw MusterError(.digestMismatch, problem.description, hint: "delete the object and fetch it again")
        case .unreadable:
            throw MusterError(.io, problem.description)
        }
    }

    private func check(_ object: ModuleDescriptor.Object) -> Problem? {
        // Never turn an unchecked name like "../../etc/shadow" into a path.
        guard Self.isDigest(object.digest) else {
            return .unreadable(digest: object.digest, reason: "not a lowercase hex sha256")
        }
        do {
            guard let (digest, size) = try ContentDigest.sha256(ofFileAt: path(of: object.digest)) else {
                return .missing(digest: object.digest)
            }
            if digest != object.digest { return .digestMismatch(digest: object.digest, actual: digest, size: size) }
            if size != object.size { return .sizeMismatch(digest: object.digest, expected: object.size, actual: size) }
            return nil
        } catch {
            return .unreadable(digest: object.digest, reason: "\(error)")
        }
    }
}

/// sha256 of files, streamed in 1 MiB reads.
public enum ContentDigest {
    /// The lowercase hex sha256 and size of a regular file, or `nil` when it does not exist.
    ///
    /// - Throws: `MusterError` `.io` when it exists but cannot be opened or read, or is not a regular file.
    public static func sha256(ofFileAt path: String) throws -> (digest: String, size: UInt64)? {
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
        if fd < 0 {
            if errno == ENOENT { return nil }
            throw MusterError(.io, "cannot open \(path): \(String(cString: strerror(errno)))")
        }
        defer { close(fd) }
        guard let status = FileStatus.fstat(fd), status.kind == .regular else {
            throw MusterError(.io, "\(path) is not a regular file")
        }
        var hasher = SHA256()
        var size: UInt64 = 0
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        while true {
            let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count < 0 {
                if errno == EINTR { continue }
                throw MusterError(.io, "cannot read \(path): \(String(cString: strerror(errno)))")
            }
            if count == 0 { break }
            buffer.withUnsafeBytes { hasher.update(bufferPointer: UnsafeRawBufferPointer(rebasing: $0[..<count])) }
            size += UInt64(count)
        }
        return (hex(hasher.finalize()), size)
    }

    /// Lowercase hex of a digest.
    public static func hex<D: Sequence>(_ bytes: D) -> String where D.Element == UInt8 {
        var out = ""
        for byte in bytes {
            out += String(byte >> 4, radix: 16)
            out += String(byte & 0x0f, radix: 16)
        }
        return out
    }
}
