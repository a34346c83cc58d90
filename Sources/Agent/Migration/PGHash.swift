/// PostgreSQL's extended hash functions (`hash_bytes_extended`, `hash_bytes_uint32_extended` in
/// `src/common/hashfn.c`, Bob Jenkins' lookup3), bit for bit, so a row hash computed here equals the one
/// `hashtextextended`, `hashint8extended` and `hashint4extended` compute on the server. These are the functions hash
/// partitioning is built on, so PostgreSQL keeps their results stable across versions and platforms.
enum PGHash {
    @inline(__always) private static func rot(_ x: UInt32, _ k: UInt32) -> UInt32 { (x << k) | (x >> (32 - k)) }

    @inline(__always) private static func mix(_ a: inout UInt32, _ b: inout UInt32, _ c: inout UInt32) {
        a &-= c; a ^= rot(c, 4); c &+= b
        b &-= a; b ^= rot(a, 6); a &+= c
        c &-= b; c ^= rot(b, 8); b &+= a
        a &-= c; a ^= rot(c, 16); c &+= b
        b &-= a; b ^= rot(a, 19); a &+= c
        c &-= b; c ^= rot(b, 4); b &+= a
    }

    @inline(__always) private static func final(_ a: inout UInt32, _ b: inout UInt32, _ c: inout UInt32) {
        c ^= b; c &-= rot(b, 14)
        a ^= c; a &-= rot(c, 11)
        b ^= a; b &-= rot(a, 25)
        c ^= b; c &-= rot(b, 16)
        a ^= c; a &-= rot(c, 4)
        b ^= a; b &-= rot(a, 14)
        c ^= b; c &-= rot(b, 24)
    }

    /// `hash_bytes_extended`: what `hashtextextended(text, seed)` returns for a deterministic collation.
    static func bytes(_ k: UnsafeRawBufferPointer, seed: UInt64) -> UInt64 {
        let n = k.count
        var a = 0x9e37_79b9 &+ UInt32(truncatingIfNeeded: n) &+ 3_923_095
        var b = a
        var c = a
        if seed != 0 {
            a &+= UInt32(truncatingIfNeeded: seed >> 32)
            b &+= UInt32(truncatingIfNeeded: seed)
            mix(&a, &b, &c)
        }
        var i = 0
        if n >= 12, let base = k.baseAddress {
            while n - i >= 12 {
                a &+= UInt32(littleEndian: base.loadUnaligned(fromByteOffset: i, as: UInt32.self))
                b &+= UInt32(littleEndian: base.loadUnaligned(fromByteOffset: i + 4, as: UInt32.self))
                c &+= UInt32(littleEndian: base.loadUnaligned(fromByteOffset: i + 8, as: UInt32.self))
                mix(&a, &b, &c)
                i += 12
            }
        }
        let r = n - i
        if r >= 11 { c &+= UInt32(k[i + 10]) << 24 }
        if r >= 10 { c &+= UInt32(k[i + 9]) << 16 }
        if r >= 9 { c &+= UInt32(k[i + 8]) << 8 }
        if r >= 8 { b &+= UInt32(k[i + 7]) << 24 }
        if r >= 7 { b &+= UInt32(k[i + 6]) << 16 }
        if r >= 6 { b &+= UInt32(k[i + 5]) << 8 }
        if r >= 5 { b &+= UInt32(k[i + 4]) }
        if r >= 4 { a &+= UInt32(k[i + 3]) << 24 }
        if r >= 3 { a &+= UInt32(k[i + 2]) << 16 }
        if r >= 2 { a &+= UInt32(k[i + 1]) << 8 }
        if r >= 1 { a &+= UInt32(k[i]) }
        final(&a, &b, &c)
        return UInt64(b) << 32 | UInt64(c)
    }

    static func bytes(_ k: UnsafeBufferPointer<UInt8>, seed: UInt64) -> UInt64 {
        bytes(UnsafeRawBufferPointer(k), seed: seed)
    }

    /// `hash_bytes_uint32_extended`: `hashint4extended(int4, seed)`.
    static func uint32(_ k: UInt32, seed: UInt64) -> UInt64 {
        var a = 0x9e37_79b9 &+ 4 &+ 3_923_095 as UInt32
        var b = a
        var c = a
        if seed != 0 {
            a &+= UInt32(truncatingIfNeeded: seed >> 32)
            b &+= UInt32(truncatingIfNeeded: seed)
            mix(&a, &b, &c)
        }
        a &+= k
        final(&a, &b, &c)
        return UInt64(b) << 32 | UInt64(c)
    }

    /// `hashint8extended(int8, seed)` (also `timestamp_hash_extended`).
    static func int64(_ v: Int64, seed: UInt64) -> UInt64 {
        var lo = UInt32(truncatingIfNeeded: v)
        let hi = UInt32(truncatingIfNeeded: v >> 32)
        lo ^= v >= 0 ? hi : ~hi
        return uint32(lo, seed: seed)
    }
}
