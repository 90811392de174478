//! The device token file and the set of tokens parsed from it: pure, so the format is
//! tested without a server.
//!
//! One entry a line: `DEVICE_ID TOKEN` (the token may carry frames of that device only) or
//! `* TOKEN` (a fleet-wide token, any device). Blank lines and `#` comments are ignored; a
//! field starting with `#` starts a comment, so `#` cannot start a token or a device id.
//!
//! Only SHA-256 digests of the tokens are kept. A presented token is hashed and its digest
//! looked up, so the time a check takes depends on the digest, which a caller cannot steer
//! towards a stored one byte by byte as with a plain string comparison. Error messages
//! name line numbers, never a token.

use std::collections::HashMap;

use sha2::{Digest, Sha256};

/// What a token allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Binding {
    /// Frames of any device.
    Fleet,
    /// Frames of this device only.
    Device(String),
}

/// A parsed token file.
#[derive(Debug, Default)]
pub struct TokenSet {
    /// Token digest to what the token allows, and the line it came from.
    tokens: HashMap<[u8; 32], (Binding, usize)>,
}

/// Why a line of the token file is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {why}")]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong with it.
    pub why: String,
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl TokenSet {
    /// Parses the whole file; the first bad line fails it.
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let mut tokens = HashMap::new();
        for (index, line) in text.lines().enumerate() {
            let number = index + 1;
            let bad = |why: String| ParseError { line: number, why };
            let fields: Vec<&str> = line
                .split_whitespace()
                .take_while(|f| !f.starts_with('#'))
                .collect();
            let (device, token) = match fields.as_slice() {
                [] => continue,
                [device, token] => (*device, *token),
                _ => {
                    return Err(bad(format!(
                        "expected `DEVICE_ID TOKEN` or `* TOKEN`, found {} fields",
                        fields.len()
                    )))
                }
            };
            // The token travels in an HTTP/2 header, which carries visible ASCII only.
            if !token.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(bad("the token must be visible ASCII".into()));
            }
            let binding = match device {
                "*" => Binding::Fleet,
                id => Binding::Device(id.to_string()),
            };
            if let Some((_, first)) = tokens.insert(digest(token), (binding, number)) {
                return Err(bad(format!("the token is already listed on line {first}")));
            }
        }
        Ok(Self { tokens })
    }

    /// What `token` allows, if it is listed.
    pub fn lookup(&self, token: &str) -> Option<&Binding> {
        self.tokens.get(&digest(token)).map(|(binding, _)| binding)
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether the file lists no token (then every protected call is refused).
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        TokenSet::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn device_and_fleet_tokens_comments_and_blank_lines() {
        let set = TokenSet::parse(
            "# the lobby\n\ncam-1 s3cret-1\n  * fleet-token   # for the load test\n\
             cam-2\ts3cret-2\r\n   # indented comment\n",
        )
        .unwrap();
        assert_eq!(set.len(), 3);
        assert_eq!(
            set.lookup("s3cret-1"),
            Some(&Binding::Device("cam-1".into()))
        );
        assert_eq!(
            set.lookup("s3cret-2"),
            Some(&Binding::Device("cam-2".into()))
        );
        assert_eq!(set.lookup("fleet-token"), Some(&Binding::Fleet));
        assert_eq!(set.lookup("s3cret-3"), None);
        assert_eq!(set.lookup("s3cret-1 "), None);
        assert_eq!(set.lookup(""), None);
        assert!(TokenSet::parse("").unwrap().is_empty());
        assert!(TokenSet::parse("# only comments\n\n").unwrap().is_empty());
    }

    #[test]
    fn malformed_lines_are_named_by_number_without_the_token() {
        assert_eq!(
            err("cam-1 a\ncam-2\n"),
            "line 2: expected `DEVICE_ID TOKEN` or `* TOKEN`, found 1 fields"
        );
        assert_eq!(
            err("\n\ncam-1 secret extra\n"),
            "line 3: expected `DEVICE_ID TOKEN` or `* TOKEN`, found 3 fields"
        );
        assert_eq!(
            err("cam-1 sécret\n"),
            "line 1: the token must be visible ASCII"
        );
        assert_eq!(
            err("cam-1 same\n# x\n* same\n"),
            "line 3: the token is already listed on line 1"
        );
        assert!(!err("cam-1 secret extra\n").contains("secret"));
    }
}
