//! Message compression (`grpc-encoding`) on the cached path: answers are stored and replayed uncompressed, so an
//! answer a backend compressed although the gateway accepted no encoding is decoded before it is stored — gzip and
//! deflate, the encodings gRPC implementations share. Decoding stops at the size limit, so a small compressed message
//! cannot expand into gigabytes.

use std::io::Read;

use bytes::Bytes;

/// Why a compressed message could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// The answer names no encoding, or one the gateway does not decode.
    #[error(
        "compressed answer in encoding `{0}`, which the gateway does not decode (it asked for none)"
    )]
    Unsupported(String),
    /// The decoded message would exceed the limit.
    #[error("decompressed answer exceeds {limit} bytes")]
    TooLarge { limit: u64 },
    /// The bytes are not valid in their encoding.
    #[error("compressed answer is not valid {encoding}: {reason}")]
    Corrupt {
        encoding: &'static str,
        reason: String,
    },
}

/// Decodes `message`, compressed with `encoding` (the `grpc-encoding` header, `None` when absent), into at most
/// `limit` bytes.
pub fn decode(encoding: Option<&[u8]>, message: &[u8], limit: u64) -> Result<Bytes, DecodeError> {
    match encoding {
        Some(b"gzip") => read_bounded("gzip", flate2::read::GzDecoder::new(message), limit),
        // gRPC's `deflate` is the zlib format (RFC 1950).
        Some(b"deflate") => read_bounded("deflate", flate2::read::ZlibDecoder::new(message), limit),
        other => Err(DecodeError::Unsupported(
            String::from_utf8_lossy(other.unwrap_or(b"(none named)")).into_owned(),
        )),
    }
}

fn read_bounded(
    encoding: &'static str,
    decoder: impl Read,
    limit: u64,
) -> Result<Bytes, DecodeError> {
    let mut out = Vec::new();
    decoder
        .take(limit.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| DecodeError::Corrupt {
            encoding,
            reason: e.to_string(),
        })?;
    if out.len() as u64 > limit {
        return Err(DecodeError::TooLarge { limit });
    }
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(bytes).expect("in memory");
        encoder.finish().expect("in memory")
    }

    #[test]
    fn gzip_and_deflate_decode() {
        assert_eq!(
            decode(Some(b"gzip"), &gzip(b"hello"), 100),
            Ok(Bytes::from("hello"))
        );
        let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        zlib.write_all(b"hello").expect("in memory");
        let zlib = zlib.finish().expect("in memory");
        assert_eq!(
            decode(Some(b"deflate"), &zlib, 100),
            Ok(Bytes::from("hello"))
        );
    }

    #[test]
    fn decoding_stops_at_the_limit() {
        let bomb = gzip(&vec![0u8; 1 << 20]);
        assert!(bomb.len() < 4096, "a megabyte of zeros compresses well");
        assert_eq!(
            decode(Some(b"gzip"), &bomb, 1000),
            Err(DecodeError::TooLarge { limit: 1000 })
        );
        assert_eq!(
            decode(Some(b"gzip"), &gzip(&[7; 1000]), 1000).map(|b| b.len()),
            Ok(1000)
        );
    }

    #[test]
    fn unknown_encodings_and_corrupt_bytes_are_errors() {
        assert_eq!(
            decode(Some(b"zstd"), b"x", 10),
            Err(DecodeError::Unsupported("zstd".into()))
        );
        assert!(matches!(
            decode(None, b"x", 10),
            Err(DecodeError::Unsupported(_))
        ));
        assert!(matches!(
            decode(Some(b"gzip"), b"not gzip", 10),
            Err(DecodeError::Corrupt { .. })
        ));
    }
}
