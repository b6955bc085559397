//! What the stand-in library (`wecom-sdk/finance-standin`) and the emulator share: the payload
//! scheme of `encrypt_chat_msg`, and the private wire format between the stand-in and the
//! emulator (which plays the library's backend).
//!
//! **This is a test scheme, not WeCom's.** WeCom's own `encrypt_chat_msg` format is private to
//! its library; nothing outside the library ever needs to read it, so the stand-in may use any
//! sound scheme. This one: the per-message key is a 32-character alphanumeric text (what the
//! RSA step unwraps, §5.3); the AES key is SHA-256 of that text; the payload is
//! `base64(iv16 ‖ AES-256-CBC-PKCS#7(plaintext) ‖ tag16)` with
//! `tag = SHA-256(key ‖ iv ‖ ciphertext)[..16]`, checked in constant time before decrypting.

use aes::Aes256;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use cbc::cipher::inout::InOutBuf;
use cbc::cipher::{BlockModeDecrypt, BlockModeEncrypt, KeyIvInit};
use rand::Rng as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The environment variable the stand-in reads in `Init`: the emulator's base URL, e.g.
/// `http://127.0.0.1:PORT` (plain HTTP to 127.0.0.1 or localhost only).
pub const STANDIN_URL_ENV: &str = "WEWORK_FINANCE_STANDIN_URL";

/// The emulator's path standing for the library's `GetChatData` backend.
pub const CHATDATA_PATH: &str = "/finance/chatdata";

/// The emulator's path standing for the library's `GetMediaData` backend.
pub const MEDIA_PATH: &str = "/finance/media";

const BLOCK: usize = 16;
const IV_LEN: usize = 16;
const TAG_LEN: usize = 16;
const KEY_TEXT_LEN: usize = 32;

/// Why [`open`] refused a payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SchemeError {
    /// Not base64.
    #[error("the payload is not base64")]
    NotBase64,
    /// Too short, or the ciphertext is not whole blocks.
    #[error("the payload has an impossible length")]
    Length,
    /// The tag does not match: wrong key, or a damaged payload.
    #[error("the payload's tag does not match (wrong key or damaged payload)")]
    Tag,
    /// The padding is malformed (only reachable with a correct tag, i.e. a buggy sealer).
    #[error("the payload's padding is malformed")]
    Padding,
}

/// A fresh per-message key text: 32 random ASCII letters and digits.
pub fn random_key_text() -> String {
    rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(KEY_TEXT_LEN)
        .map(char::from)
        .collect()
}

fn aes_key(key_text: &str) -> [u8; 32] {
    Sha256::digest(key_text.as_bytes()).into()
}

fn tag(key: &[u8; 32], iv: &[u8], ct: &[u8]) -> [u8; TAG_LEN] {
    let digest = Sha256::new()
        .chain_update(key)
        .chain_update(iv)
        .chain_update(ct)
        .finalize();
    let mut out = [0u8; TAG_LEN];
    out.copy_from_slice(&digest[..TAG_LEN]);
    out
}

/// Seals `plaintext` under `key_text` with a random IV (see the module docs for the layout).
pub fn seal(key_text: &str, plaintext: &[u8]) -> String {
    let key = aes_key(key_text);
    let iv: [u8; IV_LEN] = rand::random();
    let pad = BLOCK - plaintext.len() % BLOCK;
    let mut buf = Vec::with_capacity(IV_LEN + plaintext.len() + pad + TAG_LEN);
    buf.extend_from_slice(&iv);
    buf.extend_from_slice(plaintext);
    // `pad` is in 1..=16, so it fits a byte.
    buf.resize(
        IV_LEN + plaintext.len() + pad,
        u8::try_from(pad).unwrap_or(16),
    );
    let mut enc = cbc::Encryptor::<Aes256>::new(&key.into(), &iv.into());
    let (blocks, _tail) = InOutBuf::from(&mut buf[IV_LEN..]).into_chunks();
    enc.encrypt_blocks_inout(blocks);
    let t = tag(&key, &iv, &buf[IV_LEN..]);
    buf.extend_from_slice(&t);
    STANDARD.encode(buf)
}

/// Opens what [`seal`] made with the same `key_text`; the tag is checked (in constant time)
/// before anything is decrypted.
pub fn open(key_text: &str, sealed: &str) -> Result<Vec<u8>, SchemeError> {
    let raw = STANDARD
        .decode(sealed.trim().as_bytes())
        .map_err(|_| SchemeError::NotBase64)?;
    if raw.len() < IV_LEN + BLOCK + TAG_LEN || !(raw.len() - IV_LEN - TAG_LEN).is_multiple_of(BLOCK)
    {
        return Err(SchemeError::Length);
    }
    let (iv, rest) = raw.split_at(IV_LEN);
    let (ct, found) = rest.split_at(rest.len() - TAG_LEN);
    let key = aes_key(key_text);
    let expected = tag(&key, iv, ct);
    if !bool::from(expected.ct_eq(found)) {
        return Err(SchemeError::Tag);
    }
    let mut iv_block = [0u8; IV_LEN];
    iv_block.copy_from_slice(iv);
    let mut buf = ct.to_vec();
    let mut dec = cbc::Decryptor::<Aes256>::new(&key.into(), &iv_block.into());
    let (blocks, _tail) = InOutBuf::from(buf.as_mut_slice()).into_chunks();
    dec.decrypt_blocks_inout(blocks);
    let pad = usize::from(*buf.last().ok_or(SchemeError::Padding)?);
    if !(1..=BLOCK).contains(&pad) || pad > buf.len() {
        return Err(SchemeError::Padding);
    }
    let body = buf.len() - pad;
    if !buf[body..].iter().all(|&b| usize::from(b) == pad) {
        return Err(SchemeError::Padding);
    }
    buf.truncate(body);
    Ok(buf)
}

/// What the emulator tells the stand-in to do instead of (or before) answering normally: the
/// library's own failure modes, for the server's supervisor tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Directive {
    /// Crash the calling process with a real SIGSEGV.
    Crash,
    /// Never return (sleep an hour).
    Hang,
    /// Leak this many bytes (every page touched), then answer normally.
    Leak {
        /// How much to leak.
        bytes: u64,
    },
    /// Return this code from the call, writing nothing.
    Ret {
        /// The return code.
        ret: i32,
    },
    /// Print to standard output (vendor libraries do) — a debug line and bytes that look like
    /// the start of a frame — then answer normally.
    Print,
}

/// `POST /finance/chatdata` from the stand-in's `GetChatData`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatDataRequest {
    /// From `Init`.
    pub corpid: String,
    /// From `Init` (the 会话内容存档 secret).
    pub secret: String,
    /// Records strictly after this seq.
    pub seq: u64,
    /// At most this many (≤ 1000).
    pub limit: u32,
}

/// The emulator's answer to [`ChatDataRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatDataResponse {
    /// A failure to act out; `None` to answer normally.
    #[serde(default)]
    pub directive: Option<Directive>,
    /// WeCom's `GetChatData` JSON (§5.2) verbatim, to put into the caller's slice.
    #[serde(default)]
    pub body: String,
}

/// `POST /finance/media` from the stand-in's `GetMediaData`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaRequest {
    /// From `Init`.
    pub corpid: String,
    /// From `Init`.
    pub secret: String,
    /// The file, as a message's `sdkfileid`.
    pub sdkfileid: String,
    /// `""` for the first chunk, then the previous `outindexbuf`.
    pub indexbuf: String,
}

/// The emulator's answer to [`MediaRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaResponse {
    /// A failure to act out; `None` to answer normally.
    #[serde(default)]
    pub directive: Option<Directive>,
    /// The call's return code (10005 for an unknown sdkfileid); 0 fills the holder.
    #[serde(default)]
    pub ret: i32,
    /// The index of the next chunk (`Range:bytes=START-END`).
    #[serde(default)]
    pub outindexbuf: String,
    /// The chunk, base64 (standard alphabet).
    #[serde(default)]
    pub data_b64: String,
    /// Whether this is the last chunk.
    #[serde(default)]
    pub is_finish: bool,
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        reason = "a test fails loudly"
    )]
    use super::*;

    #[test]
    fn key_texts_are_printable_and_fresh() {
        let a = random_key_text();
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|b| b.is_ascii_alphanumeric()), "{a}");
        assert_ne!(a, random_key_text());
    }

    #[test]
    fn seal_open_round_trip() {
        let key = random_key_text();
        for len in [0, 1, 15, 16, 17, 1000] {
            let plain: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let sealed = seal(&key, &plain);
            assert_eq!(open(&key, &sealed).unwrap(), plain, "len {len}");
        }
        let text = "{\"msgtype\":\"text\",\"text\":{\"content\":\"第一行\n第二行\"}}";
        assert_eq!(
            open(&key, &seal(&key, text.as_bytes())).unwrap(),
            text.as_bytes()
        );
        assert_ne!(seal(&key, b"same"), seal(&key, b"same"), "random IV");
    }

    #[test]
    fn any_flipped_byte_fails() {
        let key = random_key_text();
        let sealed = seal(&key, b"{\"msgid\":\"x\",\"text\":{\"content\":\"hello\"}}");
        let raw = STANDARD.decode(&sealed).unwrap();
        for i in 0..raw.len() {
            for bit in [0x01u8, 0x80] {
                let mut bad = raw.clone();
                bad[i] ^= bit;
                assert_eq!(
                    open(&key, &STANDARD.encode(&bad)),
                    Err(SchemeError::Tag),
                    "byte {i} bit {bit:#x}"
                );
            }
        }
        assert_eq!(
            open(&key, &STANDARD.encode(&raw[..raw.len() - 1])),
            Err(SchemeError::Length)
        );
        assert_eq!(open(&key, "not base64!"), Err(SchemeError::NotBase64));
        assert_eq!(open(&key, ""), Err(SchemeError::Length));
    }

    #[test]
    fn wrong_key_fails() {
        let sealed = seal("the-right-key-text", b"payload");
        assert_eq!(open("the-wrong-key-text", &sealed), Err(SchemeError::Tag));
        assert_eq!(open("", &sealed), Err(SchemeError::Tag));
    }

    #[test]
    fn wire_format_is_stable() {
        let r = ChatDataResponse {
            directive: Some(Directive::Leak { bytes: 5 }),
            body: "{}".into(),
        };
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["directive"]["kind"], "leak");
        assert_eq!(v["directive"]["bytes"], 5);
        let back: ChatDataResponse = serde_json::from_value(v).unwrap();
        assert_eq!(back, r);
        let m: MediaResponse = serde_json::from_str(r#"{"ret":10005}"#).unwrap();
        assert_eq!(m.ret, 10005);
        assert_eq!(m.directive, None);
    }
}
