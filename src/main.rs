//! `warden`: see `warden --help`.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = warden::cli::Cli::parse();
    if matches!(
        cli.command,
        warden::cli::Command::Serve(_) | warden::cli::Command::Bench(_)
    ) {
        bound_malloc_caching();
    }
    match warden::cli::run(cli).await {
        Ok(0) => std::process::ExitCode::SUCCESS,
        Ok(code) => std::process::ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// argon2id allocates 19 MiB per hash on whichever blocking-pool thread runs it. glibc raises
/// its mmap threshold after such a block is freed, so later ones come from per-thread arenas
/// and stay resident: peak RSS then grows with the number of threads that ever hashed (over
/// 400 MiB measured). A fixed threshold keeps large blocks mmapped and returned on free.
///
/// Only the server hashes (and the benchmark, whose raw hashing is a sign-in baseline). The
/// maintenance commands keep glibc's adaptive threshold: with the fixed one, a rebuild's
/// batch-sized buffers (a batch of events, its rows, a `COPY` chunk) were each mapped,
/// faulted in page by page and unmapped again, a quarter of its client CPU.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn bound_malloc_caching() {
    // SAFETY: mallopt only sets allocator parameters; a rejected value leaves them as they were.
    #[allow(unsafe_code)]
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn bound_malloc_caching() {}
