//! The cache key: a blake3 hash over everything that makes two requests the same request.

use std::fmt;

/// A cache key: blake3 over the namespace, the method, the `vary` metadata values and the request message bytes.
///
/// A cryptographic hash on purpose: with a fast non-cryptographic hash, a client could compute a colliding request
/// and poison the entry another client reads.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key([u8; 32]);

impl Key {
    /// The key's 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Reads 64 hex digits back into a key.
    pub fn from_hex(hex: &str) -> Option<Self> {
        if hex.len() != 64 {
            return None;
        }
        let mut bytes = [0u8; 32];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(Self(bytes))
    }

    /// The key as 64 lowercase hex digits (how it appears in Redis and in logs).
    pub fn to_hex(&self) -> String {
        let mut s = String::with_capacity(64);
        for b in self.0 {
            s.push(char::from_digit(u32::from(b >> 4), 16).unwrap_or('0'));
            s.push(char::from_digit(u32::from(b & 0xf), 16).unwrap_or('0'));
        }
        s
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({})", &self.to_hex()[..16])
    }
}

/// Builds a [`Key`] field by field.
///
/// Every field is written with a tag and a length prefix, so no two different sequences of fields can produce the
/// same hash input (`("ab", "c")` and `("a", "bc")` differ).
///
/// The fields are gathered in a small buffer and hashed at once: blake3's hash does not depend on how its input is
/// split, and one call over ~150 bytes costs a fraction of twenty `update`s on a 2 KB hasher moved from step to
/// step. A large request message is streamed into a hasher instead of being copied.
#[derive(Debug)]
pub struct KeyBuilder(Vec<u8>);

/// Request messages up to this size are copied into the key's buffer; larger ones are streamed into the hasher.
const COPIED_REQUEST_BYTES: usize = 4096;

impl KeyBuilder {
    /// Starts a key for `method` (the full gRPC path, `/pkg.Service/Method`) within `namespace`.
    pub fn new(namespace: &str, method: &str) -> Self {
        let mut b = Self(Vec::with_capacity(256));
        b.field(b'k', b"strata.key.v1");
        b.field(b'n', namespace.as_bytes());
        b.field(b'm', method.as_bytes());
        b
    }

    /// Adds one `vary` metadata header: its name and all its values in order (`None` when absent, which differs
    /// from present-but-empty).
    pub fn vary<'a>(mut self, name: &str, values: impl IntoIterator<Item = &'a [u8]>) -> Self {
        self.field(b'v', name.as_bytes());
        let mut count: u64 = 0;
        for value in values {
            self.field(b'=', value);
            count += 1;
        }
        self.0.push(b'#');
        self.0.extend_from_slice(&count.to_le_bytes());
        self
    }

    /// Adds the generation of a scope the key belongs to (bumping it invalidates every key built with the old one).
    pub fn generation(mut self, scope: &str, generation: u64) -> Self {
        self.field(b'g', scope.as_bytes());
        self.0.extend_from_slice(&generation.to_le_bytes());
        self
    }

    /// Adds how the request and answer messages are encoded (a codec name), where that is not the default one:
    /// the same request bytes in another encoding ask for an answer in that encoding.
    pub fn encoding(mut self, codec: &str) -> Self {
        self.field(b'e', codec.as_bytes());
        self
    }

    /// Adds the request message bytes and returns the key.
    pub fn finish(mut self, request: &[u8]) -> Key {
        if request.len() <= COPIED_REQUEST_BYTES {
            self.field(b'r', request);
            return Key(*blake3::hash(&self.0).as_bytes());
        }
        self.0.push(b'r');
        self.0
            .extend_from_slice(&(request.len() as u64).to_le_bytes());
        let mut hasher = blake3::Hasher::new();
        hasher.update(&self.0);
        hasher.update(request);
        Key(*hasher.finalize().as_bytes())
    }

    fn field(&mut self, tag: u8, bytes: &[u8]) {
        self.0.push(tag);
        self.0
            .extend_from_slice(&(bytes.len() as u64).to_le_bytes());
        self.0.extend_from_slice(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(ns: &str, method: &str, vary: &[(&str, &[&[u8]])], req: &[u8]) -> Key {
        let mut b = KeyBuilder::new(ns, method);
        for (name, values) in vary {
            b = b.vary(name, values.iter().copied());
        }
        b.finish(req)
    }

    #[test]
    fn every_part_changes_the_key() {
        let base = key("ns", "/a.B/C", &[("x-tenant-id", &[b"t1"])], b"req");
        assert_eq!(
            base,
            key("ns", "/a.B/C", &[("x-tenant-id", &[b"t1"])], b"req")
        );
        assert_ne!(
            base,
            key("ns2", "/a.B/C", &[("x-tenant-id", &[b"t1"])], b"req")
        );
        assert_ne!(
            base,
            key("ns", "/a.B/D", &[("x-tenant-id", &[b"t1"])], b"req")
        );
        assert_ne!(
            base,
            key("ns", "/a.B/C", &[("x-tenant-id", &[b"t2"])], b"req")
        );
        assert_ne!(
            base,
            key("ns", "/a.B/C", &[("x-tenant-id", &[b"t1"])], b"reqx")
        );
    }

    #[test]
    fn field_boundaries_are_unambiguous() {
        assert_ne!(key("ab", "c", &[], b""), key("a", "bc", &[], b""));
        assert_ne!(
            key("n", "/m", &[("h", &[b"a", b"b"])], b""),
            key("n", "/m", &[("h", &[b"ab"])], b"")
        );
        // Absent differs from present-but-empty.
        assert_ne!(
            key("n", "/m", &[("h", &[])], b""),
            key("n", "/m", &[("h", &[b""])], b"")
        );
        // The vary values cannot leak into the request bytes.
        assert_ne!(
            key("n", "/m", &[("h", &[b"x"])], b""),
            key("n", "/m", &[("h", &[])], b"x")
        );
    }

    #[test]
    fn the_encoding_is_part_of_the_key() {
        let plain = KeyBuilder::new("n", "/m").finish(b"{}");
        let json = KeyBuilder::new("n", "/m").encoding("json").finish(b"{}");
        assert_ne!(plain, json);
        assert_ne!(
            json,
            KeyBuilder::new("n", "/m").encoding("jso").finish(b"n{}")
        );
    }

    /// The keys replicas of earlier versions stored in Redis: the hash input, field by field, must not change.
    #[test]
    fn keys_are_those_earlier_versions_built() {
        fn field(hasher: &mut blake3::Hasher, tag: u8, bytes: &[u8]) {
            hasher.update(&[tag]);
            hasher.update(&(bytes.len() as u64).to_le_bytes());
            hasher.update(bytes);
        }
        for request in [
            b"\x0a\x06item-1".to_vec(),
            vec![7; COPIED_REQUEST_BYTES + 1],
        ] {
            let mut hasher = blake3::Hasher::new();
            field(&mut hasher, b'k', b"strata.key.v1");
            field(&mut hasher, b'n', b"strata");
            field(&mut hasher, b'm', b"/demo.v1.Catalog/GetItem");
            field(&mut hasher, b'v', b"x-tenant-id");
            field(&mut hasher, b'=', b"t1");
            hasher.update(b"#");
            hasher.update(&1u64.to_le_bytes());
            field(&mut hasher, b'g', b"/demo.v1.Catalog/");
            hasher.update(&3u64.to_le_bytes());
            field(&mut hasher, b'e', b"json");
            field(&mut hasher, b'r', &request);
            let built = KeyBuilder::new("strata", "/demo.v1.Catalog/GetItem")
                .vary("x-tenant-id", [&b"t1"[..]])
                .generation("/demo.v1.Catalog/", 3)
                .encoding("json")
                .finish(&request);
            assert_eq!(
                built.as_bytes(),
                hasher.finalize().as_bytes(),
                "{} bytes",
                request.len()
            );
        }
    }

    #[test]
    fn hex_is_64_lowercase_digits() {
        let k = key("n", "/m", &[], b"");
        let hex = k.to_hex();
        assert_eq!(Key::from_hex(&hex), Some(k));
        assert_eq!(Key::from_hex(&hex[1..]), None);
        assert_eq!(Key::from_hex(&"zz".repeat(32)), None);
        assert_eq!(hex.len(), 64);
        assert!(
            hex.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
    }
}
