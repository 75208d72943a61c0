//! `warden`: see `warden --help`.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    bound_malloc_caching();
    let cli = warden::cli::Cli::parse();
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
