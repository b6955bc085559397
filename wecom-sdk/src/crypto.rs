//! WeCom callback crypto (the `WXBizMsgCrypt` scheme): SHA-1 signatures, AES-256-CBC with
//! PKCS#7 padding over **32-byte** blocks, and the `random16 | len | msg | receiveid` layout.
//!
//! Every failure maps to the official sample's error code ([`CryptoError::code`]), so logs speak the
//! same language as WeCom's documentation.

use aes::{Aes256, Aes256Dec};
use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use cbc::cipher::inout::InOutBuf;
use cbc::cipher::{BlockModeDecrypt, BlockModeEncrypt, InnerIvInit, KeyInit, KeyIvInit};
use sha1::{Digest, Sha1};
use subtle::ConstantTimeEq;

use crate::secret::Secret;

/// PKCS#7 block size used by WeCom (not AES's 16).
const PAD_BLOCK: usize = 32;
/// AES block size.
const AES_BLOCK: usize = 16;
/// Random prefix + 4-byte length.
const HEADER_LEN: usize = 20;

/// Strict standard base64 for `Encrypt` / `echostr`: canonical padding required.
const STRICT_B64: GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Lenient decoder for the EncodingAESKey: the official sample key has non-zero trailing bits,
/// which the strict engine rejects.
const KEY_B64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// What went wrong, with the code the official WeCom samples use for it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// The computed signature differs from `msg_signature` (-40001).
    #[error("signature mismatch")]
    InvalidSignature,
    /// The EncodingAESKey is not 43 base64 characters decoding to 32 bytes (-40004).
    #[error("EncodingAESKey must be 43 base64 characters that decode to 32 bytes ({0})")]
    IllegalAesKey(&'static str),
    /// The Token is empty, longer than 32 characters or not letters/digits.
    #[error("Token must be 1 to 32 letters or digits")]
    IllegalToken,
    /// The receiveid inside the plaintext is not the expected corp id (-40005).
    #[error("receiveid mismatch: the message is addressed to {found:?}")]
    ReceiveIdMismatch {
        /// The id found in the plaintext (not secret; it tells the operator which corp the key belongs to).
        found: String,
    },
    /// Ciphertext length is not a non-zero multiple of 16, or the padding is invalid (-40007).
    #[error("AES decryption failed: {0}")]
    DecryptAes(&'static str),
    /// The decrypted buffer is too short or its length field points past the end (-40008).
    #[error("illegal buffer: {0}")]
    IllegalBuffer(&'static str),
    /// The ciphertext is not strict standard base64 (-40010).
    #[error("ciphertext is not valid base64")]
    DecodeBase64,
}

impl CryptoError {
    /// The error code of the official `WXBizMsgCrypt` samples.
    pub fn code(&self) -> i32 {
        match self {
            Self::InvalidSignature => -40001,
            Self::IllegalAesKey(_) | Self::IllegalToken => -40004,
            Self::ReceiveIdMismatch { .. } => -40005,
            Self::DecryptAes(_) => -40007,
            Self::IllegalBuffer(_) => -40008,
            Self::DecodeBase64 => -40010,
        }
    }
}

/// A decrypted message: the random prefix, the message bytes and the receiveid that followed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decrypted {
    /// The 16 random bytes WeCom put in front (arbitrary bytes, not text).
    pub random: [u8; 16],
    /// The message: XML or JSON for callbacks, a number-like string for URL verification.
    pub msg: Vec<u8>,
    /// The receiveid that followed the message (the corp id for a corp's own apps).
    pub receive_id: String,
}

/// `lowercase_hex(SHA1(concat(sort([token, timestamp, nonce, encrypt]))))`.
pub fn signature(token: &str, timestamp: &str, nonce: &str, encrypt: &str) -> String {
    signature_hex(token, timestamp, nonce, encrypt)
        .iter()
        .copied()
        .map(char::from)
        .collect()
}

/// [`signature`] as ASCII bytes on the stack: verifying a callback then allocates nothing.
fn signature_hex(token: &str, timestamp: &str, nonce: &str, encrypt: &str) -> [u8; 40] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut parts = [token, timestamp, nonce, encrypt];
    parts.sort_unstable();
    let mut hasher = Sha1::new();
    for part in parts {
        hasher.update(part.as_bytes());
    }
    let mut out = [0u8; 40];
    for (pair, byte) in out.chunks_exact_mut(2).zip(hasher.finalize()) {
        for (slot, nibble) in pair.iter_mut().zip([byte >> 4, byte & 0x0f]) {
            *slot = HEX.get(usize::from(nibble)).copied().unwrap_or(b'0');
        }
    }
    out
}

/// Checks an EncodingAESKey and returns the 32-byte AES key it encodes.
pub fn decode_aes_key(encoding_aes_key: &str) -> Result<[u8; 32], CryptoError> {
    if encoding_aes_key.len() != 43 {
        return Err(CryptoError::IllegalAesKey("length is not 43"));
    }
    if !encoding_aes_key
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
    {
        return Err(CryptoError::IllegalAesKey(
            "character outside the base64 alphabet",
        ));
    }
    let mut padded = String::with_capacity(44);
    padded.push_str(encoding_aes_key);
    padded.push('=');
    let bytes = KEY_B64
        .decode(padded)
        .map_err(|_| CryptoError::IllegalAesKey("not base64"))?;
    bytes
        .try_into()
        .map_err(|_| CryptoError::IllegalAesKey("does not decode to 32 bytes"))
}

/// The crypto of one WeCom callback configuration: its Token, its EncodingAESKey and the receiveid
/// (corp id) its messages must carry.
#[derive(Clone)]
pub struct CallbackCrypto {
    token: Secret<String>,
    key: Secret<[u8; 32]>,
    /// The AES decryption key schedule, expanded once: expanding it per callback was a tenth of
    /// the decryption time.
    decrypt_key: Secret<Aes256Dec>,
    /// `key[..16]`: WeCom's IV, the same for every message.
    iv: [u8; AES_BLOCK],
    receive_id: String,
}

impl std::fmt::Debug for CallbackCrypto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallbackCrypto")
            .field("token", &self.token)
            .field("key", &self.key)
            .field("receive_id", &self.receive_id)
            .finish()
    }
}

impl CallbackCrypto {
    /// Builds the crypto for one configuration, validating the Token and the EncodingAESKey.
    /// An empty `receive_id` skips the receiveid check (third-party apps of personal developers).
    pub fn new(token: &str, encoding_aes_key: &str, receive_id: &str) -> Result<Self, CryptoError> {
        let token_ok = !token.is_empty()
            && token.len() <= 32
            && token.bytes().all(|b| b.is_ascii_alphanumeric());
        if !token_ok {
            return Err(CryptoError::IllegalToken);
        }
        let key = decode_aes_key(encoding_aes_key)?;
        let mut iv = [0u8; AES_BLOCK];
        for (iv_byte, key_byte) in iv.iter_mut().zip(key) {
            *iv_byte = key_byte;
        }
        Ok(Self {
            token: Secret::new(token.to_owned()),
            decrypt_key: Secret::new(Aes256Dec::new(&key.into())),
            key: Secret::new(key),
            iv,
            receive_id: receive_id.to_owned(),
        })
    }

    /// The receiveid messages must carry.
    pub fn receive_id(&self) -> &str {
        &self.receive_id
    }

    /// The signature WeCom would compute for these values.
    pub fn sign(&self, timestamp: &str, nonce: &str, encrypt: &str) -> String {
        signature(self.token.expose(), timestamp, nonce, encrypt)
    }

    /// Checks `msg_signature` in constant time.
    pub fn verify_signature(
        &self,
        msg_signature: &str,
        timestamp: &str,
        nonce: &str,
        encrypt: &str,
    ) -> Result<(), CryptoError> {
        let expected = signature_hex(self.token.expose(), timestamp, nonce, encrypt);
        let same: bool = expected.as_slice().ct_eq(msg_signature.as_bytes()).into();
        if same {
            Ok(())
        } else {
            Err(CryptoError::InvalidSignature)
        }
    }

    /// Verifies the signature, then decrypts and checks the receiveid: the whole check of a
    /// callback's `Encrypt` (or a verification request's `echostr`). Returns the message bytes.
    pub fn open(
        &self,
        msg_signature: &str,
        timestamp: &str,
        nonce: &str,
        encrypt: &str,
    ) -> Result<Vec<u8>, CryptoError> {
        self.verify_signature(msg_signature, timestamp, nonce, encrypt)?;
        Ok(self.decrypt(encrypt)?.msg)
    }

    /// Decrypts `encrypt` (base64) and checks the receiveid. Does not check the signature.
    pub fn decrypt(&self, encrypt: &str) -> Result<Decrypted, CryptoError> {
        let mut buf = STRICT_B64
            .decode(encrypt.as_bytes())
            .map_err(|_| CryptoError::DecodeBase64)?;
        if buf.is_empty() || buf.len() % AES_BLOCK != 0 {
            return Err(CryptoError::DecryptAes(
                "length is not a non-zero multiple of 16",
            ));
        }
        let mut dec =
            cbc::Decryptor::<&Aes256Dec>::inner_iv_init(self.decrypt_key.expose(), &self.iv.into());
        let (blocks, _tail) = InOutBuf::from(buf.as_mut_slice()).into_chunks();
        dec.decrypt_blocks_inout(blocks);

        let pad = usize::from(*buf.last().ok_or(CryptoError::DecryptAes("empty"))?);
        if !(1..=PAD_BLOCK).contains(&pad) || pad > buf.len() {
            return Err(CryptoError::DecryptAes("padding byte out of range"));
        }
        let body_len = buf.len() - pad;
        if !buf[body_len..].iter().all(|&b| usize::from(b) == pad) {
            return Err(CryptoError::DecryptAes("padding bytes differ"));
        }
        if body_len < HEADER_LEN {
            return Err(CryptoError::IllegalBuffer("shorter than 20 bytes"));
        }
        let len_bytes: [u8; 4] = buf[16..HEADER_LEN]
            .try_into()
            .map_err(|_| CryptoError::IllegalBuffer("length field"))?;
        let msg_len = usize::try_from(u32::from_be_bytes(len_bytes))
            .map_err(|_| CryptoError::IllegalBuffer("length field"))?;
        let msg_end = HEADER_LEN
            .checked_add(msg_len)
            .filter(|&end| end <= body_len)
            .ok_or(CryptoError::IllegalBuffer(
                "length field points past the end",
            ))?;
        let receive_id = std::str::from_utf8(&buf[msg_end..body_len])
            .map_err(|_| CryptoError::ReceiveIdMismatch {
                found: String::from("<not UTF-8>"),
            })?
            .to_owned();
        if !self.receive_id.is_empty() && receive_id.as_bytes() != self.receive_id.as_bytes() {
            return Err(CryptoError::ReceiveIdMismatch { found: receive_id });
        }
        let mut random = [0u8; 16];
        random.copy_from_slice(&buf[..16]);
        buf.truncate(msg_end);
        buf.drain(..HEADER_LEN);
        Ok(Decrypted {
            random,
            msg: buf,
            receive_id,
        })
    }

    /// Encrypts `msg` with the given random prefix (deterministic: for tests and vectors).
    pub fn encrypt_with_random(&self, random: &[u8; 16], msg: &[u8]) -> String {
        let receive_id = self.receive_id.as_bytes();
        let body_len = HEADER_LEN + msg.len() + receive_id.len();
        let pad = PAD_BLOCK - body_len % PAD_BLOCK;
        let mut buf = Vec::with_capacity(body_len + pad);
        buf.extend_from_slice(random);
        // A WeCom message is at most a few KiB; saturate rather than wrap for absurd inputs.
        let len = u32::try_from(msg.len()).unwrap_or(u32::MAX);
        buf.extend_from_slice(&len.to_be_bytes());
        buf.extend_from_slice(msg);
        buf.extend_from_slice(receive_id);
        // `pad` is in 1..=32, so it fits a byte.
        buf.resize(body_len + pad, u8::try_from(pad).unwrap_or(32));
        // Infallible set-up with fixed-size key and IV: a failed set-up must never fall through to
        // encoding the plaintext.
        let mut enc = cbc::Encryptor::<Aes256>::new(&(*self.key.expose()).into(), &self.iv.into());
        let (blocks, _tail) = InOutBuf::from(buf.as_mut_slice()).into_chunks();
        enc.encrypt_blocks_inout(blocks);
        STRICT_B64.encode(buf)
    }

    /// Encrypts `msg` with a fresh random prefix.
    pub fn encrypt(&self, msg: &[u8]) -> String {
        let random: [u8; 16] = rand::random();
        self.encrypt_with_random(&random, msg)
    }

    /// Builds an encrypted passive reply (`<xml><Encrypt/><MsgSignature/><TimeStamp/><Nonce/></xml>`).
    /// `timestamp` and `nonce` are normally the request's; anything but ASCII letters and digits
    /// (they come from the query string) is replaced by fresh values, so they cannot break out of
    /// the reply's elements. The signature covers whatever values the reply carries.
    pub fn seal_reply(&self, msg: &[u8], timestamp: &str, nonce: &str) -> String {
        let plain = |v: &str| {
            !v.is_empty() && v.len() <= 64 && v.bytes().all(|b| b.is_ascii_alphanumeric())
        };
        let timestamp = if plain(timestamp) && timestamp.bytes().all(|b| b.is_ascii_digit()) {
            timestamp.to_owned()
        } else {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
                .to_string()
        };
        let nonce = if plain(nonce) {
            nonce.to_owned()
        } else {
            rand::random::<u32>().to_string()
        };
        let encrypt = self.encrypt(msg);
        let signature = self.sign(&timestamp, &nonce, &encrypt);
        format!(
            "<xml>\n<Encrypt><![CDATA[{encrypt}]]></Encrypt>\n<MsgSignature><![CDATA[{signature}]]></MsgSignature>\n<TimeStamp>{timestamp}</TimeStamp>\n<Nonce><![CDATA[{nonce}]]></Nonce>\n</xml>"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B_TOKEN: &str = "hJqcu3uJ9Tn2gXPmxx2w9kkCkCE2EPYo";
    const B_KEY: &str = "6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt";
    const B_CORP: &str = "ww1436e0e65a779aee";

    #[test]
    fn rejects_bad_keys_and_tokens() {
        assert!(matches!(
            CallbackCrypto::new(B_TOKEN, "short", B_CORP),
            Err(CryptoError::IllegalAesKey(_))
        ));
        let with_eq = format!("{}=", &B_KEY[..42]);
        assert!(matches!(
            CallbackCrypto::new(B_TOKEN, &with_eq, B_CORP),
            Err(CryptoError::IllegalAesKey(_))
        ));
        assert_eq!(
            CallbackCrypto::new("", B_KEY, B_CORP).unwrap_err(),
            CryptoError::IllegalToken
        );
        assert_eq!(
            CallbackCrypto::new(&"a".repeat(33), B_KEY, B_CORP).unwrap_err(),
            CryptoError::IllegalToken
        );
    }

    #[test]
    fn every_pad_length_round_trips() {
        let c = CallbackCrypto::new(B_TOKEN, B_KEY, B_CORP).unwrap();
        for len in 0..=80 {
            let msg = vec![b'x'; len];
            let enc = c.encrypt(&msg);
            assert_eq!(c.decrypt(&enc).unwrap().msg, msg, "len {len}");
        }
    }

    #[test]
    fn sealed_reply_opens_and_resists_injection() {
        let c = CallbackCrypto::new(B_TOKEN, B_KEY, B_CORP).unwrap();
        let reply = c.seal_reply(
            "<xml><Content>收到</Content></xml>".as_bytes(),
            "1476422779",
            "1597212914",
        );
        let env = crate::parse_envelope(reply.as_bytes()).unwrap();
        assert_eq!(field_of(&reply, "TimeStamp"), "1476422779");
        let signature = field_of(&reply, "MsgSignature");
        let msg = c
            .open(&signature, "1476422779", "1597212914", &env.encrypt)
            .unwrap();
        assert_eq!(msg, "<xml><Content>收到</Content></xml>".as_bytes());
        let hostile = c.seal_reply(b"x", "1]]></TimeStamp><Evil>", "n]]><Evil/>");
        assert!(!hostile.contains("Evil"), "{hostile}");
        let env = crate::parse_envelope(hostile.as_bytes()).unwrap();
        let (ts, nonce) = (field_of(&hostile, "TimeStamp"), field_of(&hostile, "Nonce"));
        assert_eq!(
            c.open(
                &field_of(&hostile, "MsgSignature"),
                &ts,
                &nonce,
                &env.encrypt
            )
            .unwrap(),
            b"x"
        );
    }

    fn field_of(xml: &str, name: &str) -> String {
        let mut found = String::new();
        crate::xml::walk(xml, |leaf| {
            if leaf.name() == name {
                found = leaf.text.to_string();
            }
        })
        .unwrap();
        found
    }

    #[test]
    fn debug_hides_token_and_key() {
        let c = CallbackCrypto::new(B_TOKEN, B_KEY, B_CORP).unwrap();
        let shown = format!("{c:?}");
        assert!(
            !shown.contains(B_TOKEN) && shown.contains("[redacted]"),
            "{shown}"
        );
    }
}
