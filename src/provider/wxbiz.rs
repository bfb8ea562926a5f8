//! WXBizMsgCrypt: the signature and AES scheme WeCom (and DingTalk) use for callbacks.
//!
//! One implementation for both: DingTalk's callbacks use the same scheme with a JSON envelope
//! and its owner key where WeCom has the receive id, so [`WxCrypt`] takes that value as an
//! opaque string. It is exactly as strict as the scheme: the signature is the 40-character
//! lower-case hex string and nothing else, and every PKCS#7 pad byte must equal the pad value.
//!
//! Wire rules (see `shared/spec/protocols.md` §1):
//! - `msg_signature = hex(sha1(concat(sort([token, timestamp, nonce, encrypt]))))`
//! - AES-256-CBC, key = base64(EncodingAESKey + "="), IV = key[..16]
//! - PKCS#7 padding to a multiple of **32** bytes (so `cbc`'s 16-byte unpadder cannot be used)
//! - plaintext frame: `random(16) ‖ len(u32 BE) ‖ msg ‖ receive_id`

use aes::cipher::{block_padding::NoPadding, BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use sha1::{Digest, Sha1};
use subtle::ConstantTimeEq;

type Aes256CbcEnc = cbc::Encryptor<aes::Aes256>;
type Aes256CbcDec = cbc::Decryptor<aes::Aes256>;

/// WeCom pads to 32-byte multiples, not the AES block size.
const PAD_BLOCK: usize = 32;
const RANDOM_LEN: usize = 16;
const HEADER_LEN: usize = RANDOM_LEN + 4;

/// The 43-character EncodingAESKey usually has non-zero trailing bits once "=" is appended,
/// which a strict decoder rejects (`InvalidLastSymbol`).
const LENIENT_KEY_ENGINE: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Every way a callback can fail verification or decryption. The WeCom SDK code is noted on
/// each variant so operators can match log lines with WeCom's documentation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// -40004
    #[error("EncodingAESKey must be 43 base64 characters decoding to 32 bytes")]
    IllegalAesKey,
    /// -40001
    #[error("signature mismatch")]
    BadSignature,
    /// -40010
    #[error("ciphertext is not valid base64")]
    Base64,
    /// -40007
    #[error("ciphertext length {0} is not a positive multiple of 32 bytes")]
    BadCiphertextLength(usize),
    /// -40007
    #[error("bad PKCS#7 padding (pad byte {0})")]
    BadPadding(u8),
    /// -40008
    #[error("decrypted frame is truncated or its length field is out of bounds")]
    TruncatedFrame,
    /// -40005
    #[error("receive id in the message does not match the configured one")]
    ReceiveIdMismatch,
    /// -40008
    #[error("decrypted message is not UTF-8")]
    NotUtf8,
}

/// One tenant's callback crypto: Token, AES key and expected receive id (corp id).
///
/// `Debug` is hand-written so the token and key can never end up in a log line.
#[derive(Clone)]
pub struct WxCrypt {
    token: String,
    key: [u8; 32],
    receive_id: String,
}

impl std::fmt::Debug for WxCrypt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WxCrypt").field("receive_id", &self.receive_id).finish_non_exhaustive()
    }
}

/// Decodes an EncodingAESKey the way WeCom does: 43 characters of `[A-Za-z0-9]` plus "=".
pub fn decode_aes_key(encoding_aes_key: &str) -> Result<[u8; 32], CryptoError> {
    if encoding_aes_key.len() != 43 || !encoding_aes_key.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(CryptoError::IllegalAesKey);
    }
    let mut padded = String::with_capacity(44);
    padded.push_str(encoding_aes_key);
    padded.push('=');
    let bytes = LENIENT_KEY_ENGINE.decode(padded).map_err(|_| CryptoError::IllegalAesKey)?;
    bytes.try_into().map_err(|_| CryptoError::IllegalAesKey)
}

/// Checks the 32-byte PKCS#7 padding of a decrypted buffer (a non-empty multiple of 32 bytes)
/// and returns the pad length. The value must be 1..=32 and every pad byte must equal it. All
/// 32 trailing bytes are looked at whatever the value, so the time taken does not depend on
/// where a wrong byte sits.
fn check_padding(plain: &[u8]) -> Result<usize, CryptoError> {
    use subtle::{Choice, ConstantTimeGreater, ConstantTimeLess};
    debug_assert!(plain.len() >= PAD_BLOCK && plain.len() % PAD_BLOCK == 0);
    let pad = plain[plain.len() - 1];
    let mut valid: Choice = pad.ct_gt(&0) & pad.ct_lt(&(PAD_BLOCK as u8 + 1));
    for (i, byte) in plain[plain.len() - PAD_BLOCK..].iter().rev().enumerate() {
        let in_pad = (i as u8).ct_lt(&pad);
        valid &= !in_pad | byte.ct_eq(&pad);
    }
    if bool::from(valid) {
        Ok(pad as usize)
    } else {
        Err(CryptoError::BadPadding(pad))
    }
}

impl WxCrypt {
    pub fn new(token: &str, encoding_aes_key: &str, receive_id: &str) -> Result<Self, CryptoError> {
        Ok(Self { token: token.to_owned(), key: decode_aes_key(encoding_aes_key)?, receive_id: receive_id.to_owned() })
    }

    pub fn receive_id(&self) -> &str {
        &self.receive_id
    }

    /// The 40-hex-digit `msg_signature` over the four values, sorted as byte strings.
    pub fn signature(&self, timestamp: &str, nonce: &str, encrypted: &str) -> String {
        hex::encode(self.signature_bytes(timestamp, nonce, encrypted))
    }

    fn signature_bytes(&self, timestamp: &str, nonce: &str, encrypted: &str) -> [u8; 20] {
        let mut parts = [self.token.as_str(), timestamp, nonce, encrypted];
        parts.sort_unstable();
        let mut hasher = Sha1::new();
        for part in parts {
            hasher.update(part.as_bytes());
        }
        hasher.finalize().into()
    }

    /// Checks `msg_signature` in constant time (no early exit on the first differing byte).
    ///
    /// WeCom signs in lower-case hex, so the comparison is over the exact 40-character string:
    /// an upper-case rendering of the right digest is a different signature, as in the
    /// reference implementations, which compare strings.
    pub fn verify_signature(
        &self,
        msg_signature: &str,
        timestamp: &str,
        nonce: &str,
        encrypted: &str,
    ) -> Result<(), CryptoError> {
        // The length is public (always 40); only the content must not leak through timing.
        if msg_signature.len() != 40 {
            return Err(CryptoError::BadSignature);
        }
        let mut expected = [0u8; 40];
        hex::encode_to_slice(self.signature_bytes(timestamp, nonce, encrypted), &mut expected)
            .expect("20 bytes are 40 hex digits");
        if bool::from(expected[..].ct_eq(msg_signature.as_bytes())) {
            Ok(())
        } else {
            Err(CryptoError::BadSignature)
        }
    }

    /// Decrypts `Encrypt`/`echostr` and returns the message, after checking the receive id.
    pub fn decrypt(&self, encrypted_b64: &str) -> Result<String, CryptoError> {
        let mut buf = STANDARD.decode(encrypted_b64.trim()).map_err(|_| CryptoError::Base64)?;
        let msg = self.decrypt_in_place(&mut buf)?;
        let len = msg.len();
        // Reuse the buffer: shift the message to the front instead of copying it out.
        let start = HEADER_LEN;
        buf.copy_within(start..start + len, 0);
        buf.truncate(len);
        String::from_utf8(buf).map_err(|_| CryptoError::NotUtf8)
    }

    /// Decrypts `buf` in place and returns the message slice within it.
    fn decrypt_in_place<'b>(&self, buf: &'b mut [u8]) -> Result<&'b [u8], CryptoError> {
        if buf.is_empty() || buf.len() % PAD_BLOCK != 0 {
            return Err(CryptoError::BadCiphertextLength(buf.len()));
        }
        let plain = Aes256CbcDec::new(&self.key.into(), self.key[..16].into())
            .decrypt_padded_mut::<NoPadding>(buf)
            .map_err(|_| CryptoError::BadCiphertextLength(0))?;
        let pad = check_padding(plain)?;
        let plain = &plain[..plain.len() - pad];
        if plain.len() < HEADER_LEN {
            return Err(CryptoError::TruncatedFrame);
        }
        let msg_len = u32::from_be_bytes(plain[RANDOM_LEN..HEADER_LEN].try_into().unwrap()) as usize;
        let msg_end =
            HEADER_LEN.checked_add(msg_len).filter(|end| *end <= plain.len()).ok_or(CryptoError::TruncatedFrame)?;
        let receive_id = &plain[msg_end..];
        if !bool::from(receive_id.ct_eq(self.receive_id.as_bytes())) {
            return Err(CryptoError::ReceiveIdMismatch);
        }
        Ok(&plain[HEADER_LEN..msg_end])
    }

    /// Verifies the signature, then decrypts. The order matters: no AES work for unsigned input.
    pub fn verify_and_decrypt(
        &self,
        msg_signature: &str,
        timestamp: &str,
        nonce: &str,
        encrypted: &str,
    ) -> Result<String, CryptoError> {
        self.verify_signature(msg_signature, timestamp, nonce, encrypted)?;
        self.decrypt(encrypted)
    }

    /// Encrypts `msg` with a fixed 16-byte random prefix (deterministic; used by tests and vectors).
    pub fn encrypt_with_random(&self, msg: &[u8], random: &[u8; RANDOM_LEN]) -> String {
        let body_len = HEADER_LEN + msg.len() + self.receive_id.len();
        let pad = PAD_BLOCK - body_len % PAD_BLOCK;
        let mut buf = Vec::with_capacity(body_len + pad);
        buf.extend_from_slice(random);
        buf.extend_from_slice(&(msg.len() as u32).to_be_bytes());
        buf.extend_from_slice(msg);
        buf.extend_from_slice(self.receive_id.as_bytes());
        buf.resize(body_len + pad, pad as u8);
        let len = buf.len();
        let cipher = Aes256CbcEnc::new(&self.key.into(), self.key[..16].into())
            .encrypt_padded_mut::<NoPadding>(&mut buf, len)
            .expect("buffer is a whole number of blocks");
        STANDARD.encode(cipher)
    }

    /// Encrypts `msg` with a fresh random prefix of 16 alphanumerics, as WeCom does.
    pub fn encrypt(&self, msg: &[u8]) -> String {
        use rand::distributions::Alphanumeric;
        use rand::Rng;
        let mut random = [0u8; RANDOM_LEN];
        for (slot, byte) in random.iter_mut().zip(rand::thread_rng().sample_iter(&Alphanumeric)) {
            *slot = byte;
        }
        self.encrypt_with_random(msg, &random)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Vector A: official doc 90968.
    const A_TOKEN: &str = "QDG6eK";
    const A_KEY: &str = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C";
    const A_CORP: &str = "wx5823bf96d3bd56c7";
    const A_GET_ECHOSTR: &str =
        "P9nAzCzyDtyTWESHep1vC5X9xho/qYX3Zpb4yKa9SKld1DsH3Iyt3tP3zNdtp+4RPcs8TgAE7OaBO+FZXvnaqQ==";
    const A_POST_ENCRYPT: &str = "RypEvHKD8QQKFhvQ6QleEB4J58tiPdvo+rtK1I9qca6aM/wvqnLSV5zEPeusUiX5L5X/0lWfrf0QADHHhGd3QczcdCUpj911L3vg3W/sYYvuJTs3TUUkSUXxaccAS0qhxchrRYt66wiSpGLYL42aM6A8dTT+6k4aSknmPj48kzJs8qLjvd4Xgpue06DOdnLxAUHzM6+kDZ+HMZfJYuR+LtwGc2hgf5gsijff0ekUNXZiqATP7PF5mZxZ3Izoun1s4zG4LUMnvw2r+KqCKIw+3IQH03v+BCA9nMELNqbSf6tiWSrXJB3LAVGUcallcrw8V2t9EL4EhzJWrQUax5wLVMNS0+rUPA3k22Ncx4XXZS9o0MBH27Bo6BpNelZpS+/uh9KsNlY6bHCmJU9p8g7m3fVKn28H3KDYA5Pl/T8Z1ptDAVe0lXdQ2YoyyH2uyPIGHBZZIs2pDBS8R07+qN+E7Q==";
    const A_POST_MSG: &str = "<xml><ToUserName><![CDATA[wx5823bf96d3bd56c7]]></ToUserName>\n<FromUserName><![CDATA[mycreate]]></FromUserName>\n<CreateTime>1409659813</CreateTime>\n<MsgType><![CDATA[text]]></MsgType>\n<Content><![CDATA[hello]]></Content>\n<MsgId>4561255354251345929</MsgId>\n<AgentID>218</AgentID>\n</xml>";

    // Vector B: sbzhu/weworkapi_python callback/Sample.py @16e0b05.
    const B_TOKEN: &str = "hJqcu3uJ9Tn2gXPmxx2w9kkCkCE2EPYo";
    const B_KEY: &str = "6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt";
    const B_CORP: &str = "ww1436e0e65a779aee";
    const B_GET_ECHOSTR: &str =
        "fsi1xnbH4yQh0+PJxcOdhhK6TDXkjMyhEPA7xB2TGz6b+g7xyAbEkRxN/3cNXW9qdqjnoVzEtpbhnFyq6SVHyA==";
    const B_POST_ENCRYPT: &str = "Kl7kjoSf6DMD1zh7rtrHjFaDapSCkaOnwu3bqLc5tAybhhMl9pFeK8NslNPVdMwmBQTNoW4mY7AIjeLvEl3NyeTkAgGzBhzTtRLNshw2AEew+kkYcD+Fq72Kt00fT0WnN87hGrW8SqGc+NcT3mu87Ha3dz1pSDi6GaUA6A0sqfde0VJPQbZ9U+3JWcoD4Z5jaU0y9GSh010wsHF8KZD24YhmZH4ch4Ka7ilEbjbfvhKkNL65HHL0J6EYJIZUC2pFrdkJ7MhmEbU2qARR4iQHE7wy24qy0cRX3Mfp6iELcDNfSsPGjUQVDGxQDCWjayJOpcwocugux082f49HKYg84EpHSGXAyh+/oxwaWbvL6aSDPOYuPDGOCI8jmnKiypE+";
    const B_POST_MSG: &str = "<xml><ToUserName>ww1436e0e65a779aee</ToUserName><FromUserName>ChenJiaShun</FromUserName><CreateTime>1476422779</CreateTime><MsgType>text</MsgType><Content>你好</Content><MsgId>1456453720</MsgId><AgentID>1000002</AgentID></xml>";

    fn a() -> WxCrypt {
        WxCrypt::new(A_TOKEN, A_KEY, A_CORP).unwrap()
    }
    fn b() -> WxCrypt {
        WxCrypt::new(B_TOKEN, B_KEY, B_CORP).unwrap()
    }

    #[test]
    fn lenient_key_decode_matches_official_hex() {
        assert_eq!(
            hex::encode(decode_aes_key(A_KEY).unwrap()),
            "8d69989bbaabe67328014c194631ad0719b3dca035b64023df292447aab60760"
        );
        assert_eq!(
            hex::encode(decode_aes_key(B_KEY).unwrap()),
            "eaa91d32babaf274ca76ece72583b5037ed6da8120a64314be4b6d453a2a854b"
        );
    }

    #[test]
    fn vector_a_get() {
        let c = a();
        assert_eq!(c.signature("1409659589", "263014780", A_GET_ECHOSTR), "5c45ff5e21c57e6ad56bac8758b79b1d9ac89fd3");
        let msg = c
            .verify_and_decrypt("5c45ff5e21c57e6ad56bac8758b79b1d9ac89fd3", "1409659589", "263014780", A_GET_ECHOSTR)
            .unwrap();
        assert_eq!(msg, "1616140317555161061");
    }

    #[test]
    fn vector_a_post() {
        let c = a();
        let msg = c
            .verify_and_decrypt("477715d11cdb4164915debcba66cb864d751f3e6", "1409659813", "1372623149", A_POST_ENCRYPT)
            .unwrap();
        assert_eq!(msg.len(), 284);
        assert_eq!(msg, A_POST_MSG);
        // Re-encrypting with the vector's random prefix reproduces the ciphertext byte for byte,
        // which pins the 32-byte padding (pad byte 30 here).
        assert_eq!(c.encrypt_with_random(A_POST_MSG.as_bytes(), b"0960688932c47ef1"), A_POST_ENCRYPT);
    }

    #[test]
    fn vector_b_get_and_post() {
        let c = b();
        assert_eq!(
            c.verify_and_decrypt("012bc692d0a58dd4b10f8dfe5c4ac00ae211ebeb", "1476416373", "47744683", B_GET_ECHOSTR)
                .unwrap(),
            "1288432023552776189"
        );
        let msg = c
            .verify_and_decrypt("0c3914025cb4b4d68103f6bfc8db550f79dcf48e", "1476422779", "1597212914", B_POST_ENCRYPT)
            .unwrap();
        assert_eq!(msg, B_POST_MSG);
        assert_eq!(c.encrypt_with_random(B_POST_MSG.as_bytes(), b"694ce5a83ae07fe3"), B_POST_ENCRYPT);
    }

    #[test]
    fn self_generated_change_external_chat_vector() {
        let msg = "<xml><ToUserName><![CDATA[wx5823bf96d3bd56c7]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName><CreateTime>1403610513</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[change_external_chat]]></Event><ChatId><![CDATA[wrOgQhDgAAMYQiS5ol9G7gK9JVAAAA]]></ChatId><ChangeType><![CDATA[update]]></ChangeType><UpdateDetail><![CDATA[add_member]]></UpdateDetail><JoinScene>1</JoinScene><QuitScene>0</QuitScene><MemChangeCnt>2</MemChangeCnt><MemChangeList><Item><![CDATA[Jack]]></Item><Item><![CDATA[Rose]]></Item></MemChangeList><LastMemVer><![CDATA[9c3f97c2ada667dfb5f6d03308d963e1]]></LastMemVer><CurMemVer><![CDATA[71217227bbd112ecfe3a49c482195cb4]]></CurMemVer></xml>";
        let c = a();
        let enc = c.encrypt_with_random(msg.as_bytes(), b"aaaabbbbccccdddd");
        assert_eq!(enc, "ZA4HuQypHxnRrA+A6SOHGLgFjs+TTi0Q7LyFMwu1/O8duaKVLzVSGz7KRjEkbYgog09bEAd1DiSF3K/CUHXVBOAsE2cFu1hpRYi2nwBrYGCnKwARlAYM+SvSWzZw8LO9XbnOQlXfj+XysqyV7MVLi6oeis1jvvFk1yrIB6QR0AUX0qhcXDjDCpRdHMdC52t+dCDZfe5M/au7xQsKa9IYe6tHUuv4/N//WOXexerCLq6QrZYIoscjD7e2N3PfelX+7lu+YGE9GcjywpcERedCplgZgDYeA+wYjvp5gxan69iQ1fyc5QUyftwtOj6gE3LMaINcTcdSCI9v0AKOdTkY805hSMW7KDLrXN6pfsti8dEJMOTqUDgk8ebZnlzI9d+DH9lGCg7D1OQE8wF4jkKAuuzVlvjFTGGM1r3v1d/HgCNWfVPT9b7BjG8lHu3s3U94RecMiat7RtMxVaeIFp4wtZbgT3wap8Y1G1WMdaqQS+Y0a400lcxlajL1nzdmIyHBrlnaTji5tr+fTDEGvDTtXRu57lNElRPTTrHUX2ZPA6RD5FwkfPqEJ1/jDEsE7K9OoJdiE7j+aMJugRiN1+ey7ecRiqo7sbjA6DLiIJAKhJVep3x38NLvq8Z7hV5z2saO5EX3Ex730ozfa7J1pl6lrCI9NDXzxWqfvudavoxOEdh/FA2A5dfwu7kJV3EOPvzVC222QC4DZHKAoVpQk59iKcbLymW3OTnkDQjlV4PUjuSW5fa6PlbpARScvaPPSD8YXEmhXgK2s6RmtpFG0nCRtGoJO286RljxgvfDS1vUli9FDsf+LojnXtFwCH7F4f5Uwe1VVkefhawo69HRrVsKv/vccITha8JaHnRoD9hSbeK2H/ThLrYKoc3Jpm9f/fNxHtXBTwP1Bv79w7cKLX/qy1Ya1qjMvsxqUPyPRGUIZVdooH0NkURzjOccU/9zxUsDhtQlp224a39UkZ0p9+VyXw==");
        assert_eq!(c.signature("1700000000", "1234567890", &enc), "9f187d28eed68d7a1eaaa7b9b5a8533c74bf6a5d");
        assert_eq!(c.decrypt(&enc).unwrap(), msg);
    }

    #[test]
    fn round_trip_with_random_prefix() {
        let c = b();
        for len in [0usize, 1, 11, 12, 13, 31, 32, 33, 1000] {
            let msg = "x".repeat(len);
            let enc = c.encrypt(msg.as_bytes());
            assert_eq!(c.decrypt(&enc).unwrap(), msg, "len {len}");
        }
    }

    #[test]
    fn bad_signature() {
        let c = a();
        let mut sig = "477715d11cdb4164915debcba66cb864d751f3e6".to_owned();
        sig.replace_range(0..1, "5");
        assert_eq!(
            c.verify_and_decrypt(&sig, "1409659813", "1372623149", A_POST_ENCRYPT),
            Err(CryptoError::BadSignature)
        );
        assert_eq!(
            c.verify_signature("not-hex", "1409659813", "1372623149", A_POST_ENCRYPT),
            Err(CryptoError::BadSignature)
        );
        assert_eq!(c.verify_signature("", "1", "2", "3"), Err(CryptoError::BadSignature));
    }

    #[test]
    fn wrong_receive_id() {
        let c = WxCrypt::new(A_TOKEN, A_KEY, B_CORP).unwrap();
        assert_eq!(
            c.verify_and_decrypt(
                "477715d11cdb4164915debcba66cb864d751f3e6",
                "1409659813",
                "1372623149",
                A_POST_ENCRYPT
            ),
            Err(CryptoError::ReceiveIdMismatch)
        );
    }

    #[test]
    fn bad_base64() {
        assert_eq!(a().decrypt("!!!not base64!!!"), Err(CryptoError::Base64));
    }

    #[test]
    fn bad_aes_key() {
        assert_eq!(WxCrypt::new("t", "short", "c").unwrap_err(), CryptoError::IllegalAesKey);
        assert_eq!(WxCrypt::new("t", &format!("{}+", &A_KEY[..42]), "c").unwrap_err(), CryptoError::IllegalAesKey);
        assert_eq!(WxCrypt::new("t", &format!("{A_KEY}A"), "c").unwrap_err(), CryptoError::IllegalAesKey);
    }

    #[test]
    fn bad_length_and_padding() {
        let c = a();
        // 16 bytes: one AES block, but not a whole 32-byte WeCom block.
        assert_eq!(c.decrypt(&STANDARD.encode([0u8; 16])), Err(CryptoError::BadCiphertextLength(16)));
        assert_eq!(c.decrypt(""), Err(CryptoError::BadCiphertextLength(0)));
        // Encrypt a raw buffer whose last byte is an impossible pad value.
        let mut raw = [7u8; 64];
        raw[63] = 33;
        let enc = raw_encrypt(&c, &raw);
        assert_eq!(c.decrypt(&enc), Err(CryptoError::BadPadding(33)));
        raw[63] = 0;
        assert_eq!(c.decrypt(&raw_encrypt(&c, &raw)), Err(CryptoError::BadPadding(0)));
    }

    #[test]
    fn truncated_frame() {
        let c = a();
        // Valid padding (32) but only 32 bytes in all: after unpadding nothing is left for the header.
        let raw = [32u8; 32];
        assert_eq!(c.decrypt(&raw_encrypt(&c, &raw)), Err(CryptoError::TruncatedFrame));
        // A length field pointing past the end of the frame.
        let mut raw = [1u8; 64];
        raw[16..20].copy_from_slice(&1000u32.to_be_bytes());
        assert_eq!(c.decrypt(&raw_encrypt(&c, &raw)), Err(CryptoError::TruncatedFrame));
        // u32::MAX must not overflow the bounds check.
        raw[16..20].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(c.decrypt(&raw_encrypt(&c, &raw)), Err(CryptoError::TruncatedFrame));
    }

    #[test]
    fn upper_case_signature_is_refused() {
        let c = a();
        let lower = "477715d11cdb4164915debcba66cb864d751f3e6";
        assert!(c.verify_signature(lower, "1409659813", "1372623149", A_POST_ENCRYPT).is_ok());
        assert_eq!(
            c.verify_signature(&lower.to_ascii_uppercase(), "1409659813", "1372623149", A_POST_ENCRYPT),
            Err(CryptoError::BadSignature)
        );
        // One upper-case digit is enough to differ.
        let mixed = lower.replacen('d', "D", 1);
        assert_eq!(
            c.verify_signature(&mixed, "1409659813", "1372623149", A_POST_ENCRYPT),
            Err(CryptoError::BadSignature)
        );
        // 40 characters, but with padding or a prefix around fewer digits.
        assert_eq!(
            c.verify_signature(&format!(" {}", &lower[1..]), "1409659813", "1372623149", A_POST_ENCRYPT),
            Err(CryptoError::BadSignature)
        );
    }

    #[test]
    fn every_pad_byte_must_equal_the_pad_value() {
        let c = a();
        // A well-formed frame: header, a 4-byte message, the receive id, then padding.
        let mut frame = Vec::new();
        frame.extend_from_slice(b"0123456789abcdef");
        frame.extend_from_slice(&4u32.to_be_bytes());
        frame.extend_from_slice(b"ping");
        frame.extend_from_slice(A_CORP.as_bytes());
        let pad = PAD_BLOCK - frame.len() % PAD_BLOCK;
        frame.resize(frame.len() + pad, pad as u8);
        assert_eq!(c.decrypt(&raw_encrypt(&c, &frame)).unwrap(), "ping");
        // Any one pad byte other than the last changed: refused, wherever it is.
        for at in frame.len() - pad..frame.len() - 1 {
            let mut bad = frame.clone();
            bad[at] ^= 0x40;
            assert_eq!(c.decrypt(&raw_encrypt(&c, &bad)), Err(CryptoError::BadPadding(pad as u8)), "byte {at}");
        }
        // A frame that fills whole blocks carries a full block of padding: 32 bytes of 32.
        let c12 = WxCrypt::new(A_TOKEN, A_KEY, "twelve-bytes").unwrap();
        let mut full = b"0123456789abcdef".to_vec();
        full.extend_from_slice(&0u32.to_be_bytes());
        full.extend_from_slice(b"twelve-bytes");
        full.resize(64, 32);
        assert_eq!(c12.decrypt(&raw_encrypt(&c12, &full)).unwrap(), "");
        full[32] = 31;
        assert_eq!(c12.decrypt(&raw_encrypt(&c12, &full)), Err(CryptoError::BadPadding(32)));
    }

    fn raw_encrypt(c: &WxCrypt, raw: &[u8]) -> String {
        let mut buf = raw.to_vec();
        let len = buf.len();
        let out = Aes256CbcEnc::new(&c.key.into(), c.key[..16].into())
            .encrypt_padded_mut::<NoPadding>(&mut buf, len)
            .unwrap();
        STANDARD.encode(out)
    }

    #[test]
    fn debug_never_shows_secrets() {
        let shown = format!("{:?}", a());
        assert!(!shown.contains(A_TOKEN) && !shown.contains("8d69989b"));
    }
}
