import CSystemd

#if canImport(Glibc)
    import Glibc
#endif

/// A value read from a D-Bus message; containers other than structs and variants are skipped.
enum SDBusValue: Sendable, Equatable {
    case string(String)
    case objectPath(String)
    case bool(Bool)
    case byte(UInt8)
    case int32(Int32)
    case uint32(UInt32)
    case int64(Int64)
    case uint64(UInt64)
    case double(Double)
    case structure([SDBusValue])
    /// A value we do not decode (arrays, dictionaries, file descriptors); its signature.
    case skipped(signature: String)

    var stringValue: String? {
        switch self {
        case .string(let s), .objectPath(let s): s
        default: nil
        }
    }

    /// Integer kinds widened to `Int64` (unsigned 64-bit values above `Int64.max` become `nil`).
    var integerValue: Int64? {
        switch self {
        case .byte(let v): Int64(v)
        case .int32(let v): Int64(v)
        case .uint32(let v): Int64(v)
        case .int64(let v): v
        case .uint64(let v): Int64(exactly: v)
        default: nil
        }
    }
}

/// An `sd_bus_message` owned by Swift: one reference, dropped in `deinit`.
///
/// Not `Sendable`: a message belongs to its bus and is only used inside an ``SDBus/perform(_:)`` closure, on the
/// bus's queue. Strings read from it are copied into Swift before the message goes away.
final class SDBusMessage {
    private let pointer: OpaquePointer

    /// Takes over one reference (as returned by `sd_bus_message_new_method_call` or `sd_bus_call`).
    init(adopting pointer: OpaquePointer) {
        self.pointer = pointer
    }

    deinit {
        sd_bus_message_unref(pointer)
    }

    /// The raw message, for the `SDBus` layer only.
    var raw: OpaquePointer { pointer }

    private static func code(_ ch: Character) -> CChar {
        CChar(bitPattern: ch.asciiValue ?? 0)
    }

    // MARK: - Appending

    /// Appends a string (`s`). The corresponding C function is `sd_bus_message_append_basic`.
    func append(_ value: String) throws(SDBusError) {
        try appendString(value, type: "s")
    }

    /// Appends an object path (`o`). The corresponding C function is `sd_bus_message_append_basic`.
    func append(objectPath value: String) throws(SDBusError) {
        try appendString(value, type: "o")
    }

    private func appendString(_ value: String, type: Character) throws(SDBusError) {
        let m = pointer
        let t = Self.code(type)
        try sdCall("sd_bus_message_append_basic") { _ in
            value.withCString { sd_bus_message_append_basic(m, t, $0) }
        }
    }

    /// Appends a boolean (`b`, marshalled as a C `int`). The corresponding C function is
    /// `sd_bus_message_append_basic`.
    func append(_ value: Bool) throws(SDBusError) {
        var v: Int32 = value ? 1 : 0
        let m = pointer
        try sdCall("sd_bus_message_append_basic") { _ in sd_bus_message_append_basic(m, Self.code("b"), &v) }
    }

    /// Appends an unsigned 32-bit integer (`u`). The corresponding C function is `sd_bus_message_append_basic`.
    func append(_ value: UInt32) throws(SDBusError) {
        var v = value
        let m = pointer
        try sdCall("sd_bus_message_append_basic") { _ in sd_bus_message_append_basic(m, Self.code("u"), &v) }
    }

    /// Appends an array of strings (`as`). The corresponding C functions are `sd_bus_message_open_container`,
    /// `sd_bus_message_append_basic` and `sd_bus_message_close_container`.
    func append(_ values: [String]) throws(SDBusError) {
        let m = pointer
        try sdCall("sd_bus_message_open_container") { _ in sd_bus_message_open_container(m, Self.code("a"), "s") }
        for value in values { try append(value) }
        try sdCall("sd_bus_message_close_container") { _ in sd_bus_message_close_container(m) }
    }

    // MARK: - Reading

    /// Reads a string (`s`) or object path (`o`). The corresponding C function is `sd_bus_message_read_basic`.
    func readString(type: Character = "s") throws(SDBusError) -> String {
        var p: UnsafePointer<CChar>? = nil
        let m = pointer
        let rc = try sdCall("sd_bus_message_read_basic") { _ in sd_bus_message_read_basic(m, Self.code(type), &p) }
        guard rc > 0, let p else { throw Self.endOfMessage(expected: String(type)) }
        return String(cString: p)
    }

    /// Reads one fixed-size basic value into `T`. The corresponding C function is `sd_bus_message_read_basic`.
    func readTrivial<T: BitwiseCopyable>(type: Character, as _: T.Type, zero: T) throws(SDBusError) -> T {
        var value = zero
        let m = pointer
        let rc = try sdCall("sd_bus_message_read_basic") { _ in sd_bus_message_read_basic(m, Self.code(type), &value) }
        guard rc > 0 else { throw Self.endOfMessage(expected: String(type)) }
        return value
    }

    /// The type of the next element and, for containers, its contents signature; `nil` at the end of the current
    /// container. The corresponding C function is `sd_bus_message_peek_type`.
    func peek() throws(SDBusError) -> (type: Character, contents: String?)? {
        var type: CChar = 0
        var contents: UnsafePointer<CChar>? = nil
        let m = pointer
        let rc = try sdCall("sd_bus_message_peek_type") { _ in sd_bus_message_peek_type(m, &type, &contents) }
        guard rc > 0 else { return nil }
        return (Character(Unicode.Scalar(UInt8(bitPattern: type))), contents.map { String(cString: $0) })
    }

    /// Enters a container; `false` when the enclosing array has no more elements. The corresponding C function is
    /// `sd_bus_message_enter_container`.
    func enter(_ type: Character, _ contents: String) throws(SDBusError) -> Bool {
        let m = pointer
        let rc = try sdCall("sd_bus_message_enter_container") { _ in
            sd_bus_message_enter_container(m, Self.code(type), contents)
        }
        return rc > 0
    }

    /// Leaves the current container. The corresponding C function is `sd_bus_message_exit_container`.
    func exit() throws(SDBusError) {
        let m = pointer
        try sdCall("sd_bus_message_exit_container") { _ in sd_bus_message_exit_container(m) }
    }

    /// Skips values of the given complete types. The corresponding C function is `sd_bus_message_skip`.
    func skip(_ types: String) throws(SDBusError) {
        let m = pointer
        try sdCall("sd_bus_message_skip") { _ in sd_bus_message_skip(m, types) }
    }

    /// Reads the next value of any type: basic types and structs are decoded, variants unwrapped, arrays skipped.
    func readValue() throws(SDBusError) -> SDBusValue {
        guard let (type, contents) = try peek() else { throw Self.endOfMessage(expected: "a value") }
        switch type {
        case "s": return .string(try readString(type: "s"))
        case "o": return .objectPath(try readString(type: "o"))
        case "g": return .string(try readString(type: "g"))
        case "b": return .bool(try readTrivial(type: "b", as: Int32.self, zero: 0) != 0)
        case "y": return .byte(try readTrivial(type: "y", as: UInt8.self, zero: 0))
        case "n": return .int32(Int32(try readTrivial(type: "n", as: Int16.self, zero: 0)))
        case "q": return .uint32(UInt32(try readTrivial(type: "q", as: UInt16.self, zero: 0)))
        case "i": return .int32(try readTrivial(type: "i", as: Int32.self, zero: 0))
        case "u": return .uint32(try readTrivial(type: "u", as: UInt32.self, zero: 0))
        case "x": return .int64(try readTrivial(type: "x", as: Int64.self, zero: 0))
        case "t": return .uint64(try readTrivial(type: "t", as: UInt64.self, zero: 0))
        case "d": return .double(try readTrivial(type: "d", as: Double.self, zero: 0))
        case "v":
            _ = try enter("v", contents ?? "")
            let inner = try readValue()
            try exit()
            return inner
        case "r":
            _ = try enter("r", contents ?? "")
            var fields: [SDBusValue] = []
            while try peek() != nil { fields.append(try readValue()) }
            try exit()
            return .structure(fields)
        default:
            // Arrays ("a" + contents), unix fds ("h"): not needed by callers; skip the complete type.
            let signature = type == "a" ? "a" + (contents ?? "") : String(type)
            try skip(signature)
            return .skipped(signature: signature)
        }
    }

    /// Reads an `a{sv}` dictionary (the reply of `org.freedesktop.DBus.Properties.GetAll`).
    func readPropertyDictionary() throws(SDBusError) -> [String: SDBusValue] {
        var out: [String: SDBusValue] = [:]
        guard try enter("a", "{sv}") else { return out }
        while try enter("e", "sv") {
            let key = try readString()
            out[key] = try readValue()
            try exit()
        }
        try exit()
        return out
    }

    private static func endOfMessage(expected: String) -> SDBusError {
        SDBusError(
            name: nil, message: "unexpected end of message, expected \(expected)", errno: EBADMSG,
            function: "sd_bus_message_read_basic")
    }
}
