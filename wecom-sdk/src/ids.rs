//! A type per WeCom id, checked once at the edge, so that mixing them is a compile error.

use std::fmt;

/// Longest id WeCom hands out (userids are at most 64 bytes; external ids are ~32).
pub const MAX_ID_LEN: usize = 128;

/// An id failed its plausibility check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} must be 1 to {MAX_ID_LEN} printable ASCII characters (got {len} bytes)")]
pub struct IdError {
    kind: &'static str,
    len: usize,
}

impl IdError {
    /// An error for an id of kind `kind` with `len` bytes.
    pub fn new(kind: &'static str, len: usize) -> Self {
        Self { kind, len }
    }
}

macro_rules! wecom_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// The id as WeCom spells it.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                let plausible = !s.is_empty()
                    && s.len() <= MAX_ID_LEN
                    && s.bytes().all(|b| b.is_ascii_graphic());
                if plausible { Ok(Self(s)) } else { Err(IdError::new($kind, s.len())) }
            }
        }

        impl TryFrom<&str> for $name {
            type Error = IdError;
            fn try_from(s: &str) -> Result<Self, IdError> {
                Self::try_from(s.to_owned())
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl PartialEq<String> for $name {
            fn eq(&self, other: &String) -> bool {
                &self.0 == other
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

wecom_id!(
    /// A corp (`ww…`, older corps `wx…`).
    CorpId, "corp_id"
);
wecom_id!(
    /// A staff member's userid (成员).
    UserId, "userid"
);
wecom_id!(
    /// A customer (`wm…`/`wo…`). Never a staff [`UserId`].
    ExternalUserId, "external_userid"
);
wecom_id!(
    /// A customer group chat (`wr…`).
    ChatId, "chat_id"
);
wecom_id!(
    /// A corp customer tag or tag group (`et…`, strategy tags `st…`).
    TagId, "tag_id"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked_at_the_edge() {
        assert!(CorpId::try_from("ww1436e0e65a779aee").is_ok());
        assert!(CorpId::try_from("").is_err());
        assert!(CorpId::try_from("has space").is_err());
        assert!(ExternalUserId::try_from("x".repeat(MAX_ID_LEN + 1)).is_err());
    }
}
