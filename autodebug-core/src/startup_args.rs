//! The settings an engine prints about itself at startup: SGLang's `server_args=ServerArgs(...)`,
//! vLLM's `non-default args: {...}` (a Python dict) and `... with config: key=value, ...`. One
//! reader for the telemetry crate (which turns them into `<engine>.startup.<key>` attributes) and
//! the rule analyzer (which checks that a change took effect).
//!
//! ```
//! use autodebug_core::startup_args::from_line;
//! let line = "INFO [api_utils.py:286] non-default args: {'model': '/m', 'max_num_seqs': 16, 'x': [1, 2]}";
//! assert_eq!(from_line(line)[1], ("max_num_seqs".to_string(), "16".to_string()));
//! ```

/// The `(key, value)` pairs of a line that dumps an engine's arguments; empty for any other line.
pub fn from_line(text: &str) -> Vec<(String, String)> {
    for marker in ["ServerArgs(", "non-default args:", "with config:"] {
        if let Some(i) = text.find(marker) {
            return pairs(&text[i + marker.len()..]);
        }
    }
    Vec::new()
}

/// Top-level `'key': value` (a Python dict's repr) or `key=value` (a dataclass's repr) pairs, values
/// unquoted; nested brackets and quoted commas stay inside their value, and a closing bracket at
/// the top level ends the list.
pub fn pairs(body: &str) -> Vec<(String, String)> {
    let body = body.trim();
    let body = body.strip_prefix('{').unwrap_or(body);
    let mut parts = Vec::new();
    let (mut depth, mut quote, mut start) = (0i32, None::<char>, 0usize);
    let mut end = body.len();
    for (i, ch) in body.char_indices() {
        match (quote, ch) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(ch),
            (None, '(' | '[' | '{' | '<') => depth += 1,
            (None, ')' | ']' | '}' | '>') if depth == 0 => {
                end = i;
                break;
            }
            (None, ')' | ']' | '}' | '>') => depth -= 1,
            (None, ',') if depth == 0 => {
                parts.push(&body[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if start < end {
        parts.push(&body[start..end]);
    }
    parts
        .into_iter()
        .filter_map(|part| {
            let part = part.trim();
            let (key, value) =
                if part.starts_with(['\'', '"']) { part.split_once(':')? } else { part.split_once('=')? };
            let key = key.trim().trim_matches(['\'', '"']);
            let value = value.trim().trim_matches(['\'', '"']);
            let plain = !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            plain.then(|| (key.to_string(), value.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dict_a_dataclass_and_sglang_server_args_read_alike() {
        let dict = pairs(" {'model_tag': '/m', 'port': 8011, 'max_model_len': 1024, 'x': [1, 2]}");
        assert_eq!(dict.len(), 4);
        assert_eq!(dict[3], ("x".to_string(), "[1, 2]".to_string()));
        let config = pairs(" model='/m', dtype=torch.bfloat16, c=Cfg(a=1, b='x,y'), d={'k': <E.V: 2>}, seed=0");
        let keys: Vec<&str> = config.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["model", "dtype", "c", "d", "seed"]);
        let sglang =
            from_line("server_args=ServerArgs(model_path='m', schedule_policy='lpm', chunked_prefill_size=8192) tail");
        assert_eq!(sglang.last().unwrap(), &("chunked_prefill_size".to_string(), "8192".to_string()));
        assert!(from_line("INFO nothing to see").is_empty());
    }
}
