//! Gateway API key format: `pcs_<id>_<secret><checksum>`.
//!
//! * `pcs_` names the product, so secret scanners can recognise leaked keys;
//! * `<id>`: 12 base62 characters, the key's public id (shown in listings, used
//!   to find the record);
//! * `<secret>`: 22 base62 characters from the OS CSPRNG (≈131 bits);
//! * `<checksum>`: CRC32 of everything before it, 6 base62 characters, so a
//!   mistyped or truncated key is refused without touching the store.
//!
//! Only the SHA-256 digest of the whole key is stored; comparison is constant-time.

use rand::TryRngCore;
use rand::rngs::OsRng;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::secret::Secret;

/// Prefix of every client key.
pub const KEY_PREFIX: &str = "pcs_";
/// Prefix of generated master keys (never accepted as a client key).
pub const MASTER_PREFIX: &str = "pcm_";
/// Length of a key's public id.
pub const ID_LEN: usize = 12;
const SECRET_LEN: usize = 22;
const CRC_LEN: usize = 6;
/// Length of a well-formed key.
pub const KEY_LEN: usize = KEY_PREFIX.len() + ID_LEN + 1 + SECRET_LEN + CRC_LEN;
const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Why a string is not a well-formed key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyFormatError {
    /// Wrong prefix, length or alphabet.
    #[error("malformed key")]
    Malformed,
    /// The checksum does not match.
    #[error("bad key checksum")]
    Checksum,
}

/// `n` base62 characters from the OS CSPRNG (rejection sampling, no modulo bias).
pub fn random_base62(n: usize) -> String {
    let mut out = String::with_capacity(n);
    let mut buf = [0u8; 64];
    while out.len() < n {
        if OsRng.try_fill_bytes(&mut buf).is_err() {
            // The OS RNG does not fail on supported platforms; fall back to the
            // thread RNG (ChaCha seeded from the OS) rather than panic.
            rand::Rng::fill(&mut rand::rng(), &mut buf[..]);
        }
        for b in buf {
            // 248 = 4 * 62: accept only bytes below it.
            if b < 248 && out.len() < n {
                out.push(char::from(ALPHABET[usize::from(b % 62)]));
            }
        }
    }
    out
}

fn crc_base62(data: &str) -> [u8; CRC_LEN] {
    let mut v = u64::from(crc32fast::hash(data.as_bytes()));
    let mut out = [b'0'; CRC_LEN];
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[usize::try_from(v % 62).unwrap_or(0)];
        v /= 62;
    }
    out
}

/// Creates a new key: its public id and the full secret key.
pub fn generate() -> (String, Secret) {
    let id = random_base62(ID_LEN);
    let body = format!("{KEY_PREFIX}{id}_{}", random_base62(SECRET_LEN));
    let crc = crc_base62(&body);
    let key = format!("{body}{}", String::from_utf8_lossy(&crc));
    (id, Secret::new(key))
}

/// Generates a master key (`pcm_` + 40 base62 characters).
pub fn generate_master() -> Secret {
    Secret::new(format!("{MASTER_PREFIX}{}", random_base62(40)))
}

/// Checks a key's shape and checksum and returns its public id.
pub fn parse(key: &str) -> Result<&str, KeyFormatError> {
    if key.len() != KEY_LEN || !key.starts_with(KEY_PREFIX) {
        return Err(KeyFormatError::Malformed);
    }
    let rest = &key[KEY_PREFIX.len()..];
    let (id, tail) = rest.split_at(ID_LEN);
    let alnum = |s: &str| s.bytes().all(|b| b.is_ascii_alphanumeric());
    if !alnum(id) || !tail.starts_with('_') || !alnum(&tail[1..]) {
        return Err(KeyFormatError::Malformed);
    }
    let (body, crc) = key.split_at(KEY_LEN - CRC_LEN);
    if crc_base62(body).as_slice() != crc.as_bytes() {
        return Err(KeyFormatError::Checksum);
    }
    Ok(id)
}

/// SHA-256 of a key.
pub fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// Hex SHA-256, for storing the master key's digest as a setting.
pub fn digest_hex(key: &str) -> String {
    digest(key).iter().map(|b| format!("{b:02x}")).collect()
}

/// Constant-time comparison of a presented key against a stored digest.
pub fn verify(key: &str, stored: &[u8]) -> bool {
    let d = digest(key);
    stored.len() == d.len() && bool::from(d.as_slice().ct_eq(stored))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn round_trip() {
        let (id, key) = generate();
        assert_eq!(key.expose().len(), KEY_LEN);
        assert_eq!(parse(key.expose()).unwrap(), id);
        assert!(verify(key.expose(), &digest(key.expose())));
    }

    #[test]
    fn typos_fail_the_checksum() {
        let (_, key) = generate();
        let k = key.expose();
        let mut bytes = k.as_bytes().to_vec();
        let i = KEY_PREFIX.len() + ID_LEN + 5;
        bytes[i] = if bytes[i] == b'a' { b'b' } else { b'a' };
        let typo = String::from_utf8(bytes).unwrap();
        assert_eq!(parse(&typo), Err(KeyFormatError::Checksum));
        assert_eq!(parse(&k[..k.len() - 1]), Err(KeyFormatError::Malformed));
        assert_eq!(parse("sk-abc"), Err(KeyFormatError::Malformed));
    }
}
