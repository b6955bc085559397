//! Arbitrary bytes as a callback's `Encrypt` (decrypted with key set B) and as a whole POST body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wecom_sdk::{CallbackCrypto, parse_envelope};

// Key set B of the protocol reference (official Python sample).
const TOKEN: &str = "hJqcu3uJ9Tn2gXPmxx2w9kkCkCE2EPYo";
const KEY: &str = "6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt";
const CORP: &str = "ww1436e0e65a779aee";

fuzz_target!(|data: &[u8]| {
    let Ok(crypto) = CallbackCrypto::new(TOKEN, KEY, CORP) else {
        return;
    };
    if let Ok(encrypt) = std::str::from_utf8(data) {
        let _ = crypto.decrypt(encrypt);
    }
    if let Ok(envelope) = parse_envelope(data) {
        let _ = crypto.decrypt(&envelope.encrypt);
    }
});
