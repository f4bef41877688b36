//! State names: the one definition of what the sidecar accepts, used by the sidecar's store, its
//! command line, the operator's validation and the StreamJob CRD's schema (so that a job the API server
//! accepts never has sidecars that refuse to start).

use crate::limits::MAX_STATE_NAME_BYTES;

/// Characters that separate states in `--state name:kind:ttl` and `STATOR_STATES=a:value,b:map`, so
/// a state declared on the command line (as the operator declares a job's states) cannot contain them.
pub const FLAG_SEPARATORS: [char; 2] = [',', ':'];

/// The rule of [`check_flag_state_name`] as a regular expression (RE2 and ECMA-262 alike) for a
/// schema: no control character (C0, DEL, C1) and no separator. Its length bound is in bytes, which a
/// schema's `maxLength` (characters) cannot say: see [`FLAG_STATE_NAME_CEL`].
pub const FLAG_STATE_NAME_PATTERN: &str = r"^[^\x00-\x1F\x7F-\x9F,:]+$";

/// The byte bound as a CEL rule on the name (a Kubernetes validation rule).
pub const FLAG_STATE_NAME_CEL: &str = "bytes(self).size() <= 200";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateNameError {
    #[error("state names must not be empty")]
    Empty,
    #[error("state name {name:?} is {bytes} bytes long; the limit is {MAX_STATE_NAME_BYTES} bytes")]
    TooLong { name: String, bytes: usize },
    #[error("state name {name:?} contains a control character")]
    Control { name: String },
    #[error(
        "state name {name:?} contains {separator:?}, which separates states on the command line"
    )]
    Separator { name: String, separator: char },
}

/// What the store accepts: 1 to [`MAX_STATE_NAME_BYTES`] bytes of UTF-8 without control characters.
pub fn check_state_name(name: &str) -> Result<(), StateNameError> {
    if name.is_empty() {
        return Err(StateNameError::Empty);
    }
    if name.len() > MAX_STATE_NAME_BYTES {
        let shown: String = name.chars().take(40).collect();
        return Err(StateNameError::TooLong {
            name: format!("{shown}..."),
            bytes: name.len(),
        });
    }
    if name.chars().any(char::is_control) {
        return Err(StateNameError::Control {
            name: name.to_owned(),
        });
    }
    Ok(())
}

/// What a state declared on the command line (`--state`, `STATOR_STATES`) may be named: a store name
/// without the separators.
pub fn check_flag_state_name(name: &str) -> Result<(), StateNameError> {
    check_state_name(name)?;
    if let Some(separator) = name.chars().find(|c| FLAG_SEPARATORS.contains(c)) {
        return Err(StateNameError::Separator {
            name: name.to_owned(),
            separator,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_names_are_bounded_in_bytes_and_free_of_control_characters() {
        assert_eq!(check_state_name("counts"), Ok(()));
        assert_eq!(
            check_state_name("a:b,c"),
            Ok(()),
            "the store allows separators"
        );
        assert_eq!(check_state_name(""), Err(StateNameError::Empty));
        assert!(matches!(
            check_state_name("tab\there"),
            Err(StateNameError::Control { .. })
        ));
        assert!(matches!(
            check_state_name("c1\u{85}"),
            Err(StateNameError::Control { .. })
        ));
        // 100 characters, 300 bytes: within a character bound, over the byte bound.
        let wide = "€".repeat(100);
        assert!(matches!(
            check_state_name(&wide),
            Err(StateNameError::TooLong { bytes: 300, .. })
        ));
        assert_eq!(check_state_name(&"a".repeat(MAX_STATE_NAME_BYTES)), Ok(()));
    }

    #[test]
    fn flag_names_also_refuse_the_separators() {
        assert_eq!(check_flag_state_name("counts-2"), Ok(()));
        assert_eq!(
            check_flag_state_name("a:b"),
            Err(StateNameError::Separator {
                name: "a:b".into(),
                separator: ':'
            })
        );
        assert!(check_flag_state_name("a,b").is_err());
    }

    #[test]
    fn the_schema_forms_say_the_same_as_the_functions() {
        assert!(
            FLAG_STATE_NAME_CEL.contains(&MAX_STATE_NAME_BYTES.to_string()),
            "the CEL byte bound is MAX_STATE_NAME_BYTES"
        );
        // The pattern (as the API server's RE2 reads it) and the function agree on every character of
        // the Basic Multilingual Plane.
        let pattern = regex::Regex::new(FLAG_STATE_NAME_PATTERN).unwrap();
        for cp in 0u32..=0xFFFF {
            let Some(c) = char::from_u32(cp) else {
                continue;
            };
            let name = format!("a{c}b");
            assert_eq!(
                pattern.is_match(&name),
                check_flag_state_name(&name).is_ok(),
                "{cp:#x}: the pattern and the function disagree"
            );
        }
    }
}
