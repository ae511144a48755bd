//! Plays a [`Story`] into a running deploywatch, as Prometheus and a pipeline would: the
//! simulator's pushes go over HTTP to `/api/v1/write` (RW 1.0, snappy), paced in event time;
//! deploys are registered with `POST /api/v1/deploys`. The deploys are read back after every
//! push and printed as they change. Out: each expected deploy's final state.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::Method;
use prost::Message;
use tokio::sync::watch;
use tokio::time::Instant;

use super::sim::{Feed, Sim, MIN, SEC};
use super::story::{Action, Expect, Story, When};
use super::DemoError;
use crate::app::App;
use crate::cli::http::HttpClient;
use crate::deploy::{DeployJson, Verdict};
use crate::proto::prometheus as rw1;

/// Prometheus' remote-write send deadline: one push per 5 s of event time.
const PUSH_WINDOW: i64 = 5 * SEC;
/// A progress line every this much event time.
const PROGRESS_EVERY: i64 = 5 * MIN;
/// Tries per push while deploywatch answers 503 (overloaded), a second apart.
const OVERLOADED_TRIES: usize = 30;

/// How one expected deploy ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub service: String,
    pub version: String,
    pub expect: Expect,
    pub expect_rolled_back: bool,
    /// `None`: deploywatch knows no such deploy.
    pub verdict: Option<Verdict>,
    pub rolled_back: bool,
    pub rule: Option<String>,
    pub suspect: Option<String>,
}

impl Outcome {
    pub fn ok(&self) -> bool {
        self.verdict.is_some_and(|v| self.expect.holds(v))
            && (!self.expect_rolled_back || self.rolled_back)
    }

    /// `shop v3: expected rollback (rolled back), got rollback (rolled back) — ok`.
    pub fn line(&self) -> String {
        let rb = |yes: bool| if yes { " (rolled back)" } else { "" };
        let got = match self.verdict {
            Some(v) => format!("{v}{}", rb(self.rolled_back)),
            None => "no such deploy".into(),
        };
        format!(
            "{} {}: expected {}{}, got {got} — {}",
            self.service,
            self.version,
            self.expect,
            rb(self.expect_rolled_back),
            if self.ok() { "ok" } else { "NOT AS EXPECTED" }
        )
    }
}

/// Plays stories into one deploywatch and tells the terminal.
pub struct Player<W: Write> {
    client: HttpClient,
    base_url: String,
    app: Arc<App>,
    speed: f64,
    out: W,
    /// Per deploy id: its last printed status line and how many timeline events were seen.
    seen: HashMap<String, (String, usize)>,
}

impl<W: Write> Player<W> {
    /// `base_url`: the deploywatch to push to; `app`: the same deploywatch, read in-process.
    pub fn new(base_url: String, app: Arc<App>, speed: f64, out: W) -> Player<W> {
        Player {
            client: HttpClient::new(Duration::from_secs(30)),
            base_url,
            app,
            speed,
            out,
            seen: HashMap::new(),
        }
    }

    fn say(&mut self, line: &str) {
        let _ = writeln!(self.out, "{line}");
        let _ = self.out.flush();
    }

    /// Plays `story` to its end (or until `stop` turns true: [`DemoError::Interrupted`]).
    pub async fn play(
        &mut self,
        mut story: Story,
        mut stop: watch::Receiver<bool>,
    ) -> Result<Vec<Outcome>, DemoError> {
        let sims = story.services.iter().cloned().map(Sim::new).collect();
        let mut feed = Feed::new(sims, PUSH_WINDOW);
        let mut steps: Vec<_> = std::mem::take(&mut story.steps)
            .into_iter()
            .map(Some)
            .collect();
        // Steps triggered by a verdict, due at this event time.
        let mut due: Vec<(usize, i64)> = Vec::new();
        let mut paced_from: Option<Instant> = None;
        let mut next_progress = story.start + PROGRESS_EVERY;
        let history_started = std::time::Instant::now();
        self.say(&format!(
            "Sending the {} minutes before the story at full speed: the history a running \
             deploywatch would have.",
            (story.start - feed.t) / MIN
        ));

        while feed.t < story.end {
            if *stop.borrow() {
                return Err(DemoError::Interrupted);
            }
            let window_end = feed.t + feed.window;
            if window_end > story.start {
                let from = *paced_from.get_or_insert_with(|| {
                    self.say(&format!(
                        "History sent in {:.1} s. The story begins.\n",
                        history_started.elapsed().as_secs_f64()
                    ));
                    Instant::now()
                });
                // Event time runs at `speed` event seconds per wall-clock second.
                let wall = Duration::from_secs_f64(
                    (window_end - story.start) as f64 / 1000.0 / self.speed,
                );
                tokio::select! {
                    _ = tokio::time::sleep_until(from + wall) => {}
                    _ = stop.changed() => return Err(DemoError::Interrupted),
                }
            }
            // The steps due before this window's data.
            for (i, slot) in steps.iter_mut().enumerate() {
                let at = match slot {
                    Some(step) => match &step.when {
                        When::At(t) => Some(*t),
                        When::OnVerdict { .. } => due.iter().find(|d| d.0 == i).map(|d| d.1),
                    },
                    None => None,
                };
                if let Some(t) = at.filter(|t| *t < window_end) {
                    let step = slot.take().expect("a step not taken yet");
                    let t = t.max(feed.t);
                    self.act(&mut feed, step.action, t).await?;
                }
            }

            let push = feed.next_push();
            for req in &push.requests {
                self.push(req).await?;
            }

            if push.end > story.start {
                self.observe(push.end);
            }
            if push.end >= next_progress && push.end < story.end {
                self.say(&format!(
                    "{}  ── {} of {} minutes played",
                    clock(push.end),
                    (push.end - story.start) / MIN,
                    story.played_ms() / MIN
                ));
                next_progress += PROGRESS_EVERY;
            }
            // Verdict triggers: the pipeline reacts to what deploywatch says.
            for (i, step) in steps.iter().enumerate() {
                let Some(step) = step else { continue };
                let When::OnVerdict {
                    service,
                    version,
                    verdict,
                    delay,
                } = &step.when
                else {
                    continue;
                };
                if due.iter().any(|d| d.0 == i) {
                    continue;
                }
                let reached = self
                    .find(service, version)
                    .is_some_and(|d| d.verdict >= *verdict);
                if reached {
                    due.push((i, push.end + delay));
                }
            }
        }
        self.say("");
        Ok(story
            .expect
            .iter()
            .map(|e| {
                let d = self.find(&e.service, &e.version);
                Outcome {
                    service: e.service.clone(),
                    version: e.version.clone(),
                    expect: e.verdict,
                    expect_rolled_back: e.rolled_back,
                    verdict: d.as_ref().map(|d| d.verdict),
                    rolled_back: d
                        .as_ref()
                        .is_some_and(|d| d.timeline.iter().any(|e| e.event == "rollback_observed")),
                    rule: d.as_ref().and_then(deciding_rule),
                    suspect: d.as_ref().and_then(top_suspect),
                }
            })
            .collect())
    }

    /// The newest deploy of `service` to `version`.
    fn find(&self, service: &str, version: &str) -> Option<DeployJson> {
        self.app
            .deploys
            .list(Some(service))
            .into_iter()
            .find(|d| d.version == version)
    }

    async fn act(&mut self, feed: &mut Feed, action: Action, at: i64) -> Result<(), DemoError> {
        match action {
            Action::Say(line) => self.say(&format!("{}  ▶ {line}", clock(at))),
            Action::Register { mut body, say } => {
                self.say(&format!("{}  ▶ {say}", clock(at)));
                body["at"] = at.into();
                let url = format!("{}/api/v1/deploys", self.base_url);
                let answer = self.client.send(Method::POST, &url, Some(&body)).await?;
                if answer.status != 201 {
                    return Err(DemoError::Refused {
                        what: format!("POST {url}"),
                        status: answer.status,
                        body: answer.text(),
                    });
                }
            }
            Action::EndPods {
                service,
                version,
                say,
            } => {
                self.say(&format!("{}  ▶ {say}", clock(at)));
                if let Some(sim) = feed.sims.iter_mut().find(|s| s.service() == service) {
                    sim.end_pods(&version, at);
                }
            }
        }
        Ok(())
    }

    /// One remote-write request, as Prometheus sends it; retried while deploywatch says 503.
    async fn push(&self, req: &rw1::WriteRequest) -> Result<(), DemoError> {
        let body = Bytes::from(snap::raw::Encoder::new().compress_vec(&req.encode_to_vec())?);
        let url = format!("{}/api/v1/write", self.base_url);
        let headers = [
            ("content-type", "application/x-protobuf"),
            ("content-encoding", "snappy"),
            ("x-prometheus-remote-write-version", "0.1.0"),
        ];
        for _ in 0..OVERLOADED_TRIES {
            let answer = self
                .client
                .send_bytes(Method::POST, &url, &headers, body.clone())
                .await?;
            match answer.status {
                200..=299 => return Ok(()),
                503 => tokio::time::sleep(Duration::from_secs(1)).await,
                status => {
                    return Err(DemoError::Refused {
                        what: format!("POST {url}"),
                        status,
                        body: answer.text(),
                    })
                }
            }
        }
        Err(DemoError::Refused {
            what: format!("POST {url}"),
            status: 503,
            body: format!("still overloaded after {OVERLOADED_TRIES} tries"),
        })
    }

    /// Prints what changed in the deploys since the last push: their notable timeline
    /// events, and a status line per deploy whose phase, verdict, rule or suspect changed.
    fn observe(&mut self, now: i64) {
        let mut deploys = self.app.deploys.list(None);
        deploys.reverse(); // oldest first
        for d in deploys {
            let (line, seen) = match self.seen.get(&d.id) {
                Some(known) => known.clone(),
                None => {
                    self.say(&format!(
                        "{}    · {} {}: its page is {}/deploys/{}",
                        clock(d.started_at),
                        d.service,
                        d.version,
                        self.base_url,
                        d.id
                    ));
                    (String::new(), 0)
                }
            };
            for e in d.timeline.iter().skip(seen) {
                if let Some(text) = event_line(&d, e) {
                    self.say(&format!(
                        "{}    · {} {}: {text}",
                        clock(e.at),
                        d.service,
                        d.version
                    ));
                }
            }
            let status = status_line(&d);
            if status != line {
                self.say(&format!("{}  {status}", clock(now)));
            }
            self.seen.insert(d.id.clone(), (status, d.timeline.len()));
        }
    }
}

/// `16:42:30`: the time of day of an event time, UTC.
pub fn clock(ms: i64) -> String {
    crate::logging::rfc3339_ms(ms)[11..19].to_string()
}

/// The rule of the timeline's verdict change that reached the current verdict.
pub fn deciding_rule(d: &DeployJson) -> Option<String> {
    d.timeline
        .iter()
        .rev()
        .find(|e| e.event == "verdict_changed" && e.verdict == Some(d.verdict))
        .and_then(|e| e.rule.clone())
}

/// `route=/checkout (83% of the excess) → change checkout-db`.
pub fn top_suspect(d: &DeployJson) -> Option<String> {
    let s = d.suspects.first()?;
    let mut text = format!(
        "{}={} ({:.0}% of the excess)",
        s.dimension,
        s.value,
        s.share * 100.0
    );
    if s.scope == crate::deploy::Scope::BothVersions {
        // Beside a regression of the new version it is not an acquittal (issue 16).
        text += if d.verdict.is_regression() {
            " on both versions, besides the deploy's own"
        } else {
            " on both versions: not the deploy"
        };
    }
    if let Some(c) = &s.change {
        text += &format!(" → change {c}");
    }
    Some(text)
}

/// One line on a deploy: what it is, its phase, verdict, deciding rule and top suspect.
fn status_line(d: &DeployJson) -> String {
    let strategy = format!("{:?}", d.strategy).to_lowercase();
    let against = if d.comparison == "before-after" {
        "after vs before".to_string()
    } else {
        format!("vs {}", d.baseline_version.as_deref().unwrap_or("none"))
    };
    let mut s = format!(
        "{} {}  {strategy} {against}  {:<9}  {}",
        d.service,
        d.version,
        format!("{:?}", d.phase).to_lowercase(),
        d.verdict.as_str().to_uppercase()
    );
    if let Some(rule) = deciding_rule(d) {
        s += &format!("  by {rule}");
    }
    if let Some(sus) = top_suspect(d) {
        s += &format!("  suspect {sus}");
    }
    s
}

/// The timeline events worth a line of their own.
fn event_line(d: &DeployJson, e: &crate::deploy::Event) -> Option<String> {
    match e.event.as_str() {
        "verdict_changed" => Some(format!(
            "verdict {}: {}",
            e.verdict.unwrap_or(d.verdict),
            e.detail
        )),
        "suspects_named" | "shared_degradation" | "rollback_observed" | "recovered"
        | "recovery_not_seen" | "superseded" | "comparison_changed" | "observation_ended"
        | "alert_firing" | "alert_resolved" => Some(format!("{}: {}", e.event, e.detail)),
        _ => None,
    }
}
