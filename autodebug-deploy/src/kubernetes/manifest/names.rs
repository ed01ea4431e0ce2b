//! The Kubernetes naming rules the rendered objects must meet, checked before anything is applied.

use autodebug_core::{Error, Result};

/// Label values: at most 63 characters, alphanumerics, `-`, `_`, `.`, alphanumeric at both ends.
pub(super) fn check_label_value(value: &str, location: &str) -> Result<()> {
    let ok = !value.is_empty()
        && value.len() <= 63
        && value.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && value.starts_with(|c: char| c.is_ascii_alphanumeric())
        && value.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(Error::config(
            location,
            format!(
                "`{value}` cannot be a Kubernetes label value: use at most 63 letters, digits, `-`, `_` or `.`, starting and ending with a letter or digit"
            ),
        ))
    }
}

/// Object names of the built-in manifests (Services need an RFC 1035 label).
pub(super) fn check_object_name(name: &str, location: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(Error::config(
            location,
            format!(
                "`{name}` cannot name a Kubernetes Service: use at most 63 lowercase letters, digits and dashes, starting with a letter"
            ),
        ))
    }
}
