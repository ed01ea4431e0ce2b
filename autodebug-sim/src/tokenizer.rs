//! A deterministic stand-in tokenizer: one token per whitespace-separated word.

/// Ids stay below this, like a real vocabulary (and clear of 0, often a special token).
const VOCAB: u32 = 150_000;

/// Turns text into token ids, one per whitespace-separated word (FNV-1a hash of the word),
/// so a client that sends an "N words" prompt sends exactly N tokens, and the same word
/// always maps to the same id (which is what prefix caching keys on).
///
/// ```
/// use autodebug_sim::tokenize;
/// let ids = tokenize("the cat saw the dog");
/// assert_eq!(ids.len(), 5);
/// assert_eq!(ids[0], ids[3]);
/// assert_ne!(ids[1], ids[2]);
/// ```
pub fn tokenize(text: &str) -> Vec<u32> {
    text.split_whitespace().map(word_id).collect()
}

fn word_id(word: &str) -> u32 {
    let mut hash: u32 = 0x811C_9DC5;
    for byte in word.bytes() {
        hash ^= byte as u32;
        hash = hash.wrapping_mul(0x0100_0193);
    }
    1 + hash % (VOCAB - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whitespace_of_any_kind_separates_words() {
        assert_eq!(tokenize("  a\tb\n\nc  ").len(), 3);
        assert!(tokenize("   ").is_empty());
        assert!(tokenize("x y z").iter().all(|&t| t > 0 && t < VOCAB));
    }
}
