//! The control socket's protocol, shared by the node and the CLI: one
//! [`Request`] line in, one JSON line out (the [`Reply`] for the request,
//! or `{"error": …}` with a [`ControlError`]'s message).
//!
//! A request is the words `herd` takes (`weight 3`, `checker off`), so an
//! operator can also speak to the socket by hand (`socat`), and a CLI of
//! the next release can still ask a node of this one during an upgrade.

use crate::status::{CheckerReply, CommandReply, ReloadReply, Report, StateReply, WeightReply};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// What `herd weight` sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightRequest {
    /// A weight kept across restarts.
    Set(u32),
    /// Back to the config's weight.
    Config,
}

/// A request to a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    Status,
    State,
    Start,
    Stop,
    Restart,
    Drain,
    Reload,
    Weight(WeightRequest),
    /// Checkers' verdicts on (true) or ignored (false).
    Checkers(bool),
}

impl Request {
    /// Asked every second by monitoring: logged at debug only.
    pub fn is_routine(self) -> bool {
        matches!(self, Request::Status | Request::State)
    }
}

impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Request::Status => f.write_str("status"),
            Request::State => f.write_str("state"),
            Request::Start => f.write_str("start"),
            Request::Stop => f.write_str("stop"),
            Request::Restart => f.write_str("restart"),
            Request::Drain => f.write_str("drain"),
            Request::Reload => f.write_str("reload"),
            Request::Weight(WeightRequest::Set(w)) => write!(f, "weight {w}"),
            Request::Weight(WeightRequest::Config) => f.write_str("weight config"),
            Request::Checkers(true) => f.write_str("checker on"),
            Request::Checkers(false) => f.write_str("checker off"),
        }
    }
}

impl FromStr for Request {
    type Err = ControlError;

    fn from_str(line: &str) -> Result<Request, ControlError> {
        let line = line.trim();
        Ok(match line {
            "status" => Request::Status,
            "state" => Request::State,
            "start" => Request::Start,
            "stop" => Request::Stop,
            "restart" => Request::Restart,
            "drain" => Request::Drain,
            "reload" => Request::Reload,
            "checker on" => Request::Checkers(true),
            "checker off" => Request::Checkers(false),
            other => match other.strip_prefix("weight ").map(str::trim) {
                Some("config") => Request::Weight(WeightRequest::Config),
                Some(n) => Request::Weight(WeightRequest::Set(
                    n.parse()
                        .map_err(|_| ControlError::BadWeight(n.to_string()))?,
                )),
                None => return Err(ControlError::UnknownRequest(other.to_string())),
            },
        })
    }
}

/// Why a node refused a request (its message is the reply's `error`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    #[error("unknown request {0:?}")]
    UnknownRequest(String),
    #[error("weight {0:?}: expected an integer 0..=4294967295 or \"config\"")]
    BadWeight(String),
    #[error("permission denied: the control socket is for root only")]
    NotRoot,
    #[error("the node is stopping")]
    Stopping,
    #[error("weights change at run time only with membership ownership")]
    NoMembership,
    #[error("the weight could not be kept across restarts, so it is unchanged: {0}")]
    WeightNotKept(String),
    #[error("drain: the node is not UP and ready")]
    NotUp,
    /// The health machine refused the command (its reason).
    #[error("{0}")]
    Refused(String),
    /// A reload was refused (its reason; nothing changed).
    #[error("{0}")]
    Reload(String),
}

/// A node's answer to a request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Reply {
    Status(Box<Report>),
    State(StateReply),
    /// Start, stop, restart, drain: where the node stands now.
    Command(CommandReply),
    Weight(WeightReply),
    Checkers(CheckerReply),
    Reload(ReloadReply),
}

/// The JSON line a node writes for an answer.
pub fn encode(answer: &Result<Reply, ControlError>) -> String {
    match answer {
        Ok(reply) => serde_json::to_string(reply),
        Err(e) => serde_json::to_string(&serde_json::json!({ "error": e.to_string() })),
    }
    .unwrap_or_else(|e| format!("{{\"error\":\"the reply could not be written: {e}\"}}"))
}

/// A node's refusal, read back by the CLI.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("node refused: {0}")]
pub struct Refusal(pub String);

/// Reads a node's JSON line as the reply `T` to the request sent, or its
/// refusal.
pub fn decode<T: serde::de::DeserializeOwned>(line: &str) -> Result<T, DecodeError> {
    let v: serde_json::Value = serde_json::from_str(line).map_err(DecodeError::NotJson)?;
    if let Some(e) = v.get("error") {
        return Err(DecodeError::Refused(Refusal(
            e.as_str().unwrap_or("?").to_string(),
        )));
    }
    serde_json::from_value(v).map_err(DecodeError::Unexpected)
}

/// Why a reply could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("the reply is not JSON: {0}")]
    NotJson(serde_json::Error),
    #[error(transparent)]
    Refused(Refusal),
    #[error("the reply does not read as this build's (another version?): {0}")]
    Unexpected(serde_json::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_request_reads_back_as_itself() {
        let all = [
            Request::Status,
            Request::State,
            Request::Start,
            Request::Stop,
            Request::Restart,
            Request::Drain,
            Request::Reload,
            Request::Weight(WeightRequest::Set(0)),
            Request::Weight(WeightRequest::Set(u32::MAX)),
            Request::Weight(WeightRequest::Config),
            Request::Checkers(true),
            Request::Checkers(false),
        ];
        for r in all {
            assert_eq!(r.to_string().parse::<Request>(), Ok(r), "{r}");
        }
    }

    #[test]
    fn bad_requests_are_refused_by_name() {
        assert_eq!(
            "frobnicate".parse::<Request>(),
            Err(ControlError::UnknownRequest("frobnicate".into()))
        );
        assert_eq!(
            "weight -1".parse::<Request>(),
            Err(ControlError::BadWeight("-1".into()))
        );
        assert_eq!(
            "weight 4294967296"
                .parse::<Request>()
                .unwrap_err()
                .to_string(),
            "weight \"4294967296\": expected an integer 0..=4294967295 or \"config\""
        );
        assert!(" status \n".parse::<Request>().is_ok());
    }

    #[test]
    fn a_refusal_and_a_reply_read_back() {
        let line = encode(&Err(ControlError::NotUp));
        match decode::<CheckerReply>(&line) {
            Err(DecodeError::Refused(Refusal(m))) => {
                assert_eq!(m, "drain: the node is not UP and ready")
            }
            other => panic!("{other:?}"),
        }
        let line = encode(&Ok(Reply::Checkers(CheckerReply { checkers_on: false })));
        let r: CheckerReply = decode(&line).unwrap();
        assert!(!r.checkers_on);
        assert!(matches!(
            decode::<CheckerReply>("not json"),
            Err(DecodeError::NotJson(_))
        ));
        assert!(matches!(
            decode::<CheckerReply>("{\"unexpected\": 1}"),
            Err(DecodeError::Unexpected(_))
        ));
    }
}
