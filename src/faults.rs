//! Named pause points for crash and race tests. With `MINION_PAUSE_AT=<point>` in its environment
//! the process announces `MINION_PAUSED_AT <point>` on stderr when it reaches that point and waits
//! there, so a test can SIGKILL it at exactly that step, or change the world and then let it go
//! on by creating the file named by `MINION_RESUME_FILE`. Without the variable a point costs one
//! environment lookup.

use std::time::Duration;

/// Pauses here if `MINION_PAUSE_AT` names this point.
pub async fn pause_point(point: &str) {
    let Ok(wanted) = std::env::var("MINION_PAUSE_AT") else {
        return;
    };
    if wanted != point {
        return;
    }
    eprintln!("MINION_PAUSED_AT {point}");
    let resume = std::env::var_os("MINION_RESUME_FILE").map(std::path::PathBuf::from);
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if resume.as_ref().is_some_and(|file| file.exists()) {
            eprintln!("MINION_RESUMED_AT {point}");
            return;
        }
    }
}
