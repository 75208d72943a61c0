//! The README's run command on a fresh directory: `warden serve` with no configuration
//! serves sign-up and sign-in, shuts down cleanly on SIGTERM, and keeps its data; the
//! maintenance commands work on the same data.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::json;

use crate::helpers::*;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn warden(dir: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_warden"));
    cmd.current_dir(dir)
        .env_remove("DATABASE_URL")
        .env_remove("NATS_URL")
        .env_remove("WARDEN_MASTER_KEY")
        .env_remove("WARDEN_DATA_DIR")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd
}

async fn serve(dir: &std::path::Path, port: u16) -> Child {
    let mut child = warden(dir)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    for _ in 0..200 {
        if let Ok(r) = client
            .get(format!("http://127.0.0.1:{port}/readyz"))
            .send()
            .await
        {
            if r.status() == 200 {
                return child;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("warden serve did not become ready");
}

fn terminate(mut child: Child) -> std::process::ExitStatus {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    for _ in 0..200 {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("warden serve did not stop on SIGTERM");
}

#[tokio::test]
async fn the_readme_run_command_works_with_no_configuration_and_keeps_data() {
    let dir = temp_dir();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let child = serve(&dir, port).await;
    let r = client
        .post(format!("{base}/v2/accounts"))
        .json(
            &json!({ "email": "readme@example.com", "password": PASSWORD, "first_name": "Re",
            "last_name": "Adme", "billing_currency": "EUR" }),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let created: serde_json::Value = r.json().await.unwrap();
    let organization_id = created["data"]["id"].as_str().unwrap().to_owned();
    let sign_in = || {
        client
            .post(format!("{base}/v2/sessions"))
            .json(&json!({ "email": "readme@example.com", "password": PASSWORD }))
            .send()
    };
    assert_eq!(sign_in().await.unwrap().status(), 201);
    assert!(terminate(child).success(), "graceful shutdown exits 0");
    assert!(dir.join("warden-data/warden.db").exists());
    assert!(dir.join("warden-data/master.key").exists());

    let child = serve(&dir, port).await;
    assert_eq!(
        sign_in().await.unwrap().status(),
        201,
        "data survived the restart"
    );
    assert!(terminate(child).success());

    let verify = warden(&dir).args(["audit", "verify"]).status().unwrap();
    assert!(verify.success());

    // The auditor's export: every event of the organization, with hashes, one per line;
    // and one stream replayed as of now.
    let export = dir.join("export.ndjson");
    let org = {
        let out = warden(&dir)
            .args(["audit", "export", "--org", &organization_id, "--output"])
            .arg(&export)
            .status()
            .unwrap();
        assert!(out.success());
        std::fs::read_to_string(&export).unwrap()
    };
    let lines: Vec<serde_json::Value> = org
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines
        .iter()
        .any(|e| e["event_type"] == "organization.created"));
    assert!(lines
        .iter()
        .any(|e| e["event_type"] == "user.session_started"));
    assert!(lines.iter().all(|e| e["hash"].is_string()));
    let replay = warden(&dir)
        .args(["replay", &format!("organization-{organization_id}")])
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    assert!(replay.status.success());
    let state: serde_json::Value = serde_json::from_slice(&replay.stdout).unwrap();
    assert_eq!(state["state"]["billing_currency"], "EUR");
    let rebuild = warden(&dir)
        .args(["projections", "rebuild"])
        .status()
        .unwrap();
    assert!(rebuild.success());
    let child = serve(&dir, port).await;
    assert_eq!(
        sign_in().await.unwrap().status(),
        201,
        "rebuilt read models serve sign-in"
    );
    assert!(terminate(child).success());
}
