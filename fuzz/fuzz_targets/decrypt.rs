//! `WxCrypt::verify_and_decrypt` and `WxCrypt::decrypt` never panic, whatever the four request
//! values; decryption agrees with an independent frame parser; and
//! `decrypt(encrypt_with_random(msg, random)) == msg` for any UTF-8 message.
//!
//! The first byte picks the mode and receive id (see `groupwatch_fuzz::selector`):
//! - raw: the rest, split on NUL, is `msg_signature`, `timestamp`, `nonce`, `Encrypt`;
//! - frame: the rest is a plaintext frame, AES-encrypted with the test key and then decrypted,
//!   so the fuzzer reaches the padding / length / receive-id checks behind the cipher;
//! - round trip: 16 bytes of random prefix, then the message.
#![no_main]

use groupwatch::provider::wxbiz::CryptoError;
use groupwatch_fuzz::{crypt, raw_encrypt, reference_frame, MODE_FRAME, MODE_RAW, RECEIVE_IDS};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else { return };
    let rid = (sel as usize / 3) % RECEIVE_IDS.len();
    let c = crypt(rid);
    match sel % 3 {
        MODE_RAW => {
            let mut parts = rest.splitn(4, |b| *b == 0).map(String::from_utf8_lossy);
            let sig = parts.next().unwrap_or_default();
            let ts = parts.next().unwrap_or_default();
            let nonce = parts.next().unwrap_or_default();
            let enc = parts.next().unwrap_or_default();
            let direct = c.decrypt(&enc);
            let good_sig = c.signature(&ts, &nonce, &enc);
            match c.verify_and_decrypt(&sig, &ts, &nonce, &enc) {
                Err(CryptoError::BadSignature) => {}
                // Anything but a signature error means the signature was exactly the right one
                // (lower-case hex, as WeCom signs).
                other => {
                    assert_eq!(*sig, good_sig);
                    assert_eq!(other, direct);
                }
            }
            // With the right signature, verification is transparent.
            assert_eq!(c.verify_and_decrypt(&good_sig, &ts, &nonce, &enc), direct);
        }
        MODE_FRAME => {
            let mut frame = rest.to_vec();
            if frame.len() % 32 != 0 {
                // WeCom's PKCS#7 to 32; frames that are already whole keep the fuzzer's pad byte.
                let pad = 32 - frame.len() % 32;
                frame.resize(frame.len() + pad, pad as u8);
            }
            let got = c.decrypt(&raw_encrypt(&frame));
            let want = reference_frame(&frame, RECEIVE_IDS[rid]);
            match (&got, &want) {
                (Ok(msg), Some(m)) => assert_eq!(msg.as_bytes(), &m[..]),
                (Err(CryptoError::NotUtf8), Some(m)) => assert!(std::str::from_utf8(m).is_err()),
                (Err(_), None) => {}
                _ => panic!("decrypt {got:?} but reference {want:?} for frame {frame:?}"),
            }
        }
        _ => {
            let mut random = [0u8; 16];
            let n = rest.len().min(16);
            random[..n].copy_from_slice(&rest[..n]);
            let msg = String::from_utf8_lossy(&rest[n..]);
            let enc = c.encrypt_with_random(msg.as_bytes(), &random);
            assert_eq!(c.decrypt(&enc).as_deref(), Ok(&*msg));
            let sig = c.signature("1700000000", "nonce", &enc);
            assert_eq!(c.verify_and_decrypt(&sig, "1700000000", "nonce", &enc).as_deref(), Ok(&*msg));
        }
    }
});
