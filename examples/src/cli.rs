//! What the example binaries share on their command lines: value parsers for clap and
//! the exit code of a run.

use state_api::Result;

/// A number of events; `_` separators allowed (`3_000_000`).
pub fn count(v: &str) -> std::result::Result<u64, String> {
    v.replace('_', "")
        .parse()
        .map_err(|_| format!("`{v}` is not a number of events"))
}

/// A `KEY=VALUE` pair.
pub fn key_value(v: &str) -> std::result::Result<(String, String), String> {
    v.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("`{v}` is not KEY=VALUE"))
}

/// Success, or the error printed as `<program>: <error>` and a failure exit code.
pub fn exit_code(program: &str, result: Result<()>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{program}: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
