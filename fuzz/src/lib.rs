//! Shared by the `decrypt` fuzz target and the seed generator (`cargo run --example gen_seeds`).

use aes::cipher::{block_padding::NoPadding, BlockEncryptMut, KeyIvInit};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use groupwatch::provider::wxbiz::{decode_aes_key, WxCrypt};

/// Official WeCom test vector (doc 90968).
pub const TOKEN: &str = "QDG6eK";
pub const AES_KEY: &str = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C";
/// Receive ids the target checks against: the vector's corp id, a one-byte id (easier for the
/// fuzzer to hit by mutation) and an empty one (the frame then ends right after the message).
pub const RECEIVE_IDS: [&str; 3] = ["wx5823bf96d3bd56c7", "c", ""];

/// First input byte of the `decrypt` target: `mode = b % 3`, `receive id = RECEIVE_IDS[(b / 3) % 3]`.
pub const MODE_RAW: u8 = 0;
pub const MODE_FRAME: u8 = 1;
pub const MODE_ROUND_TRIP: u8 = 2;

pub fn selector(mode: u8, receive_id: usize) -> u8 {
    mode + 3 * receive_id as u8
}

pub fn crypt(receive_id: usize) -> WxCrypt {
    WxCrypt::new(TOKEN, AES_KEY, RECEIVE_IDS[receive_id]).expect("valid test key")
}

/// AES-256-CBC with the WeCom key and IV and no padding of its own: `frame` must be a whole
/// number of 16-byte blocks. Lets the fuzzer control the decrypted frame byte for byte.
pub fn raw_encrypt(frame: &[u8]) -> String {
    let key = decode_aes_key(AES_KEY).expect("valid test key");
    let mut buf = frame.to_vec();
    let len = buf.len();
    let out = cbc::Encryptor::<aes::Aes256>::new(&key.into(), key[..16].into())
        .encrypt_padded_mut::<NoPadding>(&mut buf, len)
        .expect("whole blocks");
    STANDARD.encode(out)
}

/// Reference parser of a decrypted frame `random(16) ‖ len(u32 BE) ‖ msg ‖ receive_id ‖ pad`,
/// written independently of `groupwatch::provider::wxbiz` for a differential check.
pub fn reference_frame(frame: &[u8], receive_id: &str) -> Option<Vec<u8>> {
    if frame.is_empty() || frame.len() % 32 != 0 {
        return None;
    }
    let pad = *frame.last()? as usize;
    if !(1..=32).contains(&pad) {
        return None;
    }
    // PKCS#7: every pad byte is the pad value, not only the last.
    if frame[frame.len() - pad..].iter().any(|b| *b as usize != pad) {
        return None;
    }
    let body = &frame[..frame.len() - pad];
    let len_bytes: [u8; 4] = body.get(16..20)?.try_into().ok()?;
    let msg_len = u32::from_be_bytes(len_bytes) as u64;
    let rest = &body[20..];
    if msg_len > rest.len() as u64 {
        return None;
    }
    let (msg, id) = rest.split_at(msg_len as usize);
    (id == receive_id.as_bytes()).then(|| msg.to_vec())
}
