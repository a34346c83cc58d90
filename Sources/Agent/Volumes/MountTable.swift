import Foundation

/// The kernel's mount table as one process sees it (`/proc/self/mountinfo`, proc(5)).
///
/// The unit state alone does not prove a mount: a `.mount` unit can be `active` while another mount sits on top,
/// or the table can hold a mount systemd lost track of. The agent therefore checks the table itself.
struct MountTable: Sendable, Equatable {
    struct Entry: Sendable, Equatable {
        /// Field 5: the mount point, unescaped (`\040` → space).
        var mountPoint: String
        /// Field 4: the root of the mount within its file system (a bind mount of `/srv/a` has `/srv/a` here).
        var root: String
        var fileSystemType: String
        /// The source after the ` - ` separator (`server:/export` for NFS).
        var source: String
        var options: [String]
    }

    var entries: [Entry]

    /// Reads and parses a mountinfo file.
    /// - Throws: when the file cannot be read.
    static func read(path: String = "/proc/self/mountinfo") throws -> MountTable {
        try parse(String(contentsOfFile: path, encoding: .utf8))
    }

    /// Parses mountinfo text; malformed lines are skipped.
    static func parse(_ text: String) -> MountTable {
        var entries: [Entry] = []
        for line in text.split(separator: "\n") {
            let fields = line.split(separator: " ", omittingEmptySubsequences: false)
            guard let separator = fields.firstIndex(of: "-"), separator >= 6, fields.count >= separator + 3 else {
                continue
            }
            entries.append(
                Entry(
                    mountPoint: unescape(fields[4]), root: unescape(fields[3]),
                    fileSystemType: String(fields[separator + 1]), source: unescape(fields[separator + 2]),
                    options: fields[5].split(separator: ",").map(String.init)))
        }
        return MountTable(entries: entries)
    }

    /// The topmost mount at `path` (the last entry wins: later mounts stack on earlier ones).
    func mount(at path: String) -> Entry? {
        let normalized = Self.normalize(path)
        return entries.last { $0.mountPoint == normalized }
    }

    static func normalize(_ path: String) -> String {
        "/" + path.split(separator: "/").filter { $0 != "." }.joined(separator: "/")
    }

    /// Octal escapes of mountinfo (`\040` space, `\011` tab, `\012` newline, `\134` backslash).
    static func unescape(_ field: Substring) -> String {
        guard field.contains("\\") else { return String(field) }
        var out: [UInt8] = []
        let bytes = Array(field.utf8)
        var i = 0
        while i < bytes.count {
            if bytes[i] == UInt8(ascii: "\\"), i + 4 <= bytes.count,
                let value = UInt8(String(decoding: bytes[(i + 1)..<(i + 4)], as: UTF8.self), radix: 8)
            {
                out.append(value)
                i += 4
            } else {
                out.append(bytes[i])
                i += 1
            }
        }
        return String(decoding: out, as: UTF8.self)
    }
}
