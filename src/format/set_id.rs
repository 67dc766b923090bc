//! The set id: 128 random bits naming one backup run. On media it is 16
//! raw bytes (label, record headers, catalog); to people it is 32
//! lowercase hex digits, as `pbio backup` prints it and the CLI accepts it.

use std::fmt;
use std::str::FromStr;

/// A set id. The bytes are exactly what the format stores.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SetId(pub [u8; SetId::BYTES]);

impl SetId {
    /// Bytes of a set id on media.
    pub const BYTES: usize = 16;
    /// Hex digits of a set id as shown.
    pub const HEX_DIGITS: usize = 2 * SetId::BYTES;

    pub fn as_bytes(&self) -> &[u8; SetId::BYTES] {
        &self.0
    }

    /// Whether the shown form starts with `prefix` (hex digits, any case).
    /// The empty prefix matches every id.
    pub fn has_hex_prefix(&self, prefix: &str) -> bool {
        self.to_string().starts_with(&prefix.to_ascii_lowercase())
    }
}

impl From<[u8; SetId::BYTES]> for SetId {
    fn from(bytes: [u8; SetId::BYTES]) -> SetId {
        SetId(bytes)
    }
}

/// Lowercase hex, 32 digits.
impl fmt::Display for SetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// A text that is not a whole set id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a set id is {} hex digits", SetId::HEX_DIGITS)]
pub struct SetIdParseError;

/// Exactly 32 hex digits, either case; nothing around them.
impl FromStr for SetId {
    type Err = SetIdParseError;

    fn from_str(text: &str) -> Result<SetId, SetIdParseError> {
        if text.len() != SetId::HEX_DIGITS || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(SetIdParseError);
        }
        let mut id = [0u8; SetId::BYTES];
        for (i, byte) in id.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).expect("checked hex");
        }
        Ok(SetId(id))
    }
}

/// Any 16 bytes (property tests).
#[cfg(test)]
impl proptest::arbitrary::Arbitrary for SetId {
    type Parameters = ();
    type Strategy = proptest::strategy::Map<
        proptest::arbitrary::StrategyFor<[u8; SetId::BYTES]>,
        fn([u8; SetId::BYTES]) -> SetId,
    >;

    fn arbitrary_with((): ()) -> Self::Strategy {
        use proptest::strategy::Strategy;
        proptest::arbitrary::any::<[u8; SetId::BYTES]>().prop_map(SetId)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_and_parsed() {
        let id = SetId([
            0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd,
            0xee, 0xff,
        ]);
        assert_eq!(id.to_string(), "00112233445566778899aabbccddeeff");
        assert_eq!("00112233445566778899AABBCCDDEEFF".parse(), Ok(id));
        assert_eq!("0011".parse::<SetId>(), Err(SetIdParseError));
        assert_eq!("zz".repeat(16).parse::<SetId>(), Err(SetIdParseError));
        assert_eq!(
            format!("+{}", &id.to_string()[1..]).parse::<SetId>(),
            Err(SetIdParseError)
        );
        assert!(id.has_hex_prefix(""));
        assert!(id.has_hex_prefix("0011"));
        assert!(id.has_hex_prefix("00112233445566778899AA"));
        assert!(id.has_hex_prefix("00112233445566778899AABBCCDDEEFF"));
        assert!(!id.has_hex_prefix("01"));
        assert!(!id.has_hex_prefix("00112233445566778899aabbccddeeff0"));
    }

    #[test]
    fn order_is_the_bytes_order() {
        let (a, b) = (SetId([1; 16]), SetId([2; 16]));
        assert!(a < b && [1u8; 16] < [2u8; 16]);
    }
}
