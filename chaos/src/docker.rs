//! The docker CLI, driven from the host: the only way faults reach the containers.
//!
//! Every action is followed by `docker inspect` so a fault is reported only once Docker says it
//! holds (the container stopped, is paused, left the network).

use anyhow::{bail, Context as _};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::process::Command;

/// What `docker inspect` says about one container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerState {
    /// Running (a paused container is still running).
    pub running: bool,
    /// Paused.
    pub paused: bool,
    /// The exit code of the last run (137 after SIGKILL).
    pub exit_code: i64,
    /// The healthcheck status (`healthy`, `starting`, `unhealthy`, or empty without one).
    pub health: String,
    /// The networks the container is attached to.
    pub networks: Vec<String>,
}

/// A compose project's containers, by service name.
#[derive(Clone, Debug)]
pub struct Docker {
    /// Service name (`synod-3`, `etcd-1`) to container id.
    pub containers: BTreeMap<String, String>,
    /// The project's network (`<project>_synod`).
    pub network: String,
    /// The compose project name.
    pub project: String,
}

/// Run `docker args...` and return stdout, failing with stderr on a non-zero exit.
pub async fn docker(args: &[&str]) -> anyhow::Result<String> {
    let out = tokio::time::timeout(Duration::from_secs(60), Command::new("docker").args(args).kill_on_drop(true).output())
        .await
        .with_context(|| format!("docker {} timed out", args.join(" ")))?
        .with_context(|| format!("running docker {}", args.join(" ")))?;
    if !out.status.success() {
        bail!("docker {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Parse the line `docker inspect -f` prints with [`INSPECT_FORMAT`].
pub fn parse_state(line: &str) -> Option<ContainerState> {
    let mut f = line.trim().splitn(5, '|');
    let running = f.next()? == "true";
    let paused = f.next()? == "true";
    let exit_code = f.next()?.parse().ok()?;
    let health = f.next()?.to_string();
    let networks = f.next().unwrap_or("").split_whitespace().map(str::to_string).collect();
    Some(ContainerState { running, paused, exit_code, health, networks })
}

/// The `docker inspect` template [`parse_state`] reads.
pub const INSPECT_FORMAT: &str =
    "{{.State.Running}}|{{.State.Paused}}|{{.State.ExitCode}}|{{if .State.Health}}{{.State.Health.Status}}{{end}}|{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}";

impl Docker {
    /// Find the containers of compose project `project`.
    pub async fn discover(project: &str) -> anyhow::Result<Docker> {
        let out = docker(&[
            "ps",
            "-a",
            "--filter",
            &format!("label=com.docker.compose.project={project}"),
            "--format",
            "{{.Label \"com.docker.compose.service\"}} {{.ID}}",
        ])
        .await?;
        let containers: BTreeMap<String, String> = out
            .lines()
            .filter_map(|l| l.split_once(' ').map(|(s, id)| (s.to_string(), id.to_string())))
            .collect();
        if containers.is_empty() {
            bail!("no containers for compose project {project:?}: is the cluster up?");
        }
        Ok(Docker { containers, network: format!("{project}_{}", crate::compose::NETWORK), project: project.to_string() })
    }

    fn id(&self, service: &str) -> anyhow::Result<&str> {
        self.containers.get(service).map(String::as_str).with_context(|| format!("no container for service {service}"))
    }

    /// Inspect one service's container.
    pub async fn state(&self, service: &str) -> anyhow::Result<ContainerState> {
        let out = docker(&["inspect", "-f", INSPECT_FORMAT, self.id(service)?]).await?;
        parse_state(&out).with_context(|| format!("unexpected docker inspect output {out:?}"))
    }

    /// Run a docker subcommand on one service's container (`kill -s KILL`, `start`, ...).
    pub async fn on(&self, verb: &[&str], service: &str) -> anyhow::Result<()> {
        let id = self.id(service)?.to_string();
        let mut args: Vec<&str> = verb.to_vec();
        args.push(&id);
        docker(&args).await.map(drop)
    }

    /// `docker network disconnect|connect NET container`.
    pub async fn network(&self, verb: &str, net: &str, service: &str) -> anyhow::Result<()> {
        let id = self.id(service)?.to_string();
        let mut args = vec!["network", verb];
        if verb == "disconnect" {
            args.push("--force");
        }
        args.push(net);
        args.push(&id);
        docker(&args).await.map(drop)
    }

    /// Poll `state` until `ok` holds or `within` passes; returns the last state and whether it held.
    pub async fn wait_for(
        &self,
        service: &str,
        within: Duration,
        ok: impl Fn(&ContainerState) -> bool,
    ) -> anyhow::Result<(ContainerState, bool)> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let s = self.state(service).await?;
            if ok(&s) {
                return Ok((s, true));
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok((s, false));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inspect_lines_parse() {
        let s = parse_state("false|false|137||synod_synod \n").expect("parses");
        assert_eq!(
            s,
            ContainerState { running: false, paused: false, exit_code: 137, health: String::new(), networks: vec!["synod_synod".into()] }
        );
        let s = parse_state("true|true|0|healthy|").expect("parses");
        assert!(s.running && s.paused && s.networks.is_empty() && s.health == "healthy");
        assert_eq!(parse_state("garbage"), None);
    }
}
