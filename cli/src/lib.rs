//! Shared plumbing of the `rmq` and `mqadmin` binaries.

pub mod mqadmin;
pub mod roles;

/// Rewrites Apache's multi-letter short flags (`-pc`, `-bc`, `-pm`) into long ones clap knows.
pub fn normalize_args(args: impl IntoIterator<Item = String>) -> Vec<String> {
    args.into_iter()
        .map(|a| match a.as_str() {
            "-pc" => "--proxy-config".to_string(),
            "-bc" => "--broker-config".to_string(),
            "-pm" => "--proxy-mode".to_string(),
            _ => a,
        })
        .collect()
}
