//! Example programs live in this folder; run them with `cargo run -p autodebug-examples --example NAME`.
