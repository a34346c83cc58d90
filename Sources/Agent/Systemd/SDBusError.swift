import CSystemd
import Shared

#if canImport(Glibc)
    import Glibc
#endif

/// A libsystemd call that failed: the D-Bus error the peer sent (if any) and the errno.
///
/// Only ``sdCall(_:_:)`` creates these, from a negative return value and the `sd_bus_error` filled by the call.
/// `SystemdManager` turns them into ``MusterError``s with a unit-level message.
struct SDBusError: Error, Sendable, CustomStringConvertible, Equatable {
    /// The D-Bus error name, e.g. `org.freedesktop.systemd1.NoSuchUnit`, when the peer replied with an error.
    var name: String?
    /// The peer's error message, or `strerror(errno)` for local failures.
    var message: String
    /// The positive errno (libsystemd returns `-errno`).
    var errno: Int32
    /// The C function that failed, e.g. `sd_bus_call`.
    var function: String

    init(name: String?, message: String, errno: Int32, function: String = "") {
        self.name = name
        self.message = message
        self.errno = errno
        self.function = function
    }

    var description: String {
        var text = function.isEmpty ? "" : "\(function): "
        if let name { text += "\(name): " }
        return text + "\(message) (errno \(errno))"
    }

    /// Well-known D-Bus error names we branch on.
    enum Name {
        static let noSuchUnit = "org.freedesktop.systemd1.NoSuchUnit"
        static let noSuchJob = "org.freedesktop.systemd1.NoSuchJob"
        static let unknownObject = "org.freedesktop.DBus.Error.UnknownObject"
        static let unknownInterface = "org.freedesktop.DBus.Error.UnknownInterface"
        static let unknownProperty = "org.freedesktop.DBus.Error.UnknownProperty"
    }

    /// `true` when the peer said the object (unit or job) does not exist.
    var isNoSuchObject: Bool {
        name == Name.noSuchUnit || name == Name.noSuchJob || name == Name.unknownObject
    }
}

/// Runs one libsystemd call and converts a negative return into an ``SDBusError``.
///
/// The closure receives a zeroed `sd_bus_error` to pass to calls that take one; it is freed on every path
/// (success or failure) before this function returns. This is the one place that maps C failures to Swift errors.
/// - Parameters:
///   - function: the C function's name, for the error message.
///   - body: performs the call and returns its `Int32` result.
/// - Returns: the non-negative result.
/// - Throws: ``SDBusError`` when the result is negative.
@discardableResult
func sdCall(_ function: String, _ body: (UnsafeMutablePointer<sd_bus_error>) -> Int32) throws(SDBusError) -> Int32 {
    var error = sd_bus_error()
    defer { sd_bus_error_free(&error) }
    let rc = body(&error)
    if rc >= 0 { return rc }
    let name = error.name.map { String(cString: $0) }
    let message = error.message.map { String(cString: $0) } ?? String(cString: strerror(-rc))
    throw SDBusError(name: name, message: message, errno: -rc, function: function)
}
