//! Subcommands of the `deploywatch` binary that talk to a running deploywatch over HTTP:
//! flags in, an exit code out. `deploy` registers a deploy and waits for its verdict.

pub mod deploy;
pub(crate) mod http;
