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

    /// Run one docker subcommand on several services' containers at once (`docker kill -s KILL
    /// a b c`: one command, so the daemon acts on them back to back).
    pub async fn on_all(&self, verb: &[&str], services: &[String]) -> anyhow::Result<()> {
        let ids: Vec<String> = services.iter().map(|s| self.id(s).map(str::to_string)).collect::<anyhow::Result<_>>()?;
        let mut args: Vec<&str> = verb.to_vec();
        args.extend(ids.iter().map(String::as_str));
        docker(&args).await.map(drop)
    }

    /// When each service's container last stopped (`.State.FinishedAt`), in seconds since the
    /// Unix epoch; one `docker inspect` for all of them.
    pub async fn finished_at(&self, services: &[String]) -> anyhow::Result<Vec<f64>> {
        let ids: Vec<String> = services.iter().map(|s| self.id(s).map(str::to_string)).collect::<anyhow::Result<_>>()?;
        let mut args = vec!["inspect", "-f", "{{.State.FinishedAt}}"];
        args.extend(ids.iter().map(String::as_str));
        let out = docker(&args).await?;
        out.lines().map(|l| parse_time(l).with_context(|| format!("unexpected FinishedAt {l:?}"))).collect()
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

/// Seconds since the Unix epoch of an RFC 3339 UTC time as Docker prints it
/// (`2026-01-27T13:55:02.123456789Z`; Go trims the fraction's trailing zeros, or drops it).
pub fn parse_time(s: &str) -> Option<f64> {
    let s = s.trim().strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let mut t = time.splitn(3, ':');
    let (h, min) = (t.next()?.parse::<i64>().ok()?, t.next()?.parse::<i64>().ok()?);
    let sec: f64 = t.next()?.parse().ok()?;
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86_400 + h * 3_600 + min * 60) as f64 + sec)
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

    #[test]
    fn docker_times_parse() {
        assert_eq!(parse_time("1970-01-01T00:00:00Z"), Some(0.0));
        assert_eq!(parse_time("2000-03-01T00:00:01.5Z"), Some(951_868_801.5));
        let a = parse_time("2026-01-27T23:59:59.990000001Z").unwrap();
        let b = parse_time("2026-01-28T00:00:00.01Z\n").unwrap();
        assert!((b - a - 0.02).abs() < 1e-6, "{}", b - a);
        assert_eq!(parse_time("0001-01-01T00:00:00+01:00"), None);
        assert_eq!(parse_time("garbage"), None);
    }
}
