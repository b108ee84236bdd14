//! `herd reload` and SIGHUP: the config file read again and what may
//! change at run time applied (`config::reload` decides what; this module
//! applies it): the VIPs and rules to the fastpath, the XDP pre-filter and
//! the kernel, and to the census of moving buckets; the polling to the
//! lcores; this node's weight, the protocol version and
//! the keyring (read again from its files) to the membership; the
//! checkers, scripts and restart loop limit to the health driver; the log
//! level to the log. On any error
//! the node keeps the config it runs.

use crate::farm::MembershipHandle;
use config::reload::{plan, Changes};
use config::Config;
use fastpath::node::RunningNode;
use std::path::Path;

/// What a reload did, as the control socket and the log say it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub ok: bool,
    pub message: String,
}

/// A request to the task that owns the running config.
pub type Request = tokio::sync::oneshot::Sender<Outcome>;

/// Reads `path` and applies it to the node running `running`, which it
/// then replaces.
pub async fn reload(
    path: &Path,
    running: &mut Config,
    node: &RunningNode,
    membership: Option<&MembershipHandle>,
    health: &health::driver::Health,
) -> Outcome {
    let refuse = |message: String| {
        tracing::error!("reload: {message}");
        Outcome { ok: false, message }
    };
    let new = match Config::from_file(path) {
        Ok(c) => c,
        Err(e) => {
            return refuse(format!(
                "{}: {e}; the node keeps the config it runs",
                path.display()
            ))
        }
    };
    let changes = match plan(running, &new) {
        Ok(c) => c,
        Err(r) => return refuse(format!("refused, nothing changed: {r}")),
    };
    let versions = match (crate::farm::protocol_versions(&new), membership) {
        (Err(e), _) => return refuse(format!("refused, nothing changed: {e:#}")),
        (Ok(v), Some(m)) if v.newest < m.shared.with(|mach| mach.versions().newest) => {
            return refuse(format!(
                "refused, nothing changed: membership.protocol_version: {} is older than the version this node speaks now; peers would keep writing the newer one (restart the node to hold it back)",
                v.newest
            ))
        }
        (Ok(v), _) => v,
    };
    // The key files are read again whatever their paths: a rotation may
    // rewrite a file in place.
    let keys = match membership {
        Some(m) => match crate::farm::read_keyring(&new) {
            Ok(k) if k != m.shared.with(|mach| mach.keys().clone()) => Some(k),
            Ok(_) => None,
            Err(e) => return refuse(format!("{e:#}; the node keeps the config it runs")),
        },
        None => None,
    };
    if changes.is_empty() && keys.is_none() {
        tracing::info!("reload: nothing changed");
        return Outcome {
            ok: true,
            message: changes.to_string(),
        };
    }
    if let Err(message) = apply(&changes, running, &new, node, membership) {
        return refuse(message);
    }
    if let (Some(_), Some(m)) = (changes.protocol_version, membership) {
        // Checked above, before anything was applied.
        m.shared.change(|mach, t| {
            mach.set_versions(t, versions);
        });
    }
    // What cannot fail once the config is valid.
    if changes.health {
        if let Err(e) = health.reconfigure(&new).await {
            return refuse(format!("checkers and scripts: {e}"));
        }
    }
    if changes.log_level.is_some() {
        crate::service::set_log_level(new.log.directives());
    }
    let mut parts = Vec::new();
    if !changes.is_empty() {
        parts.push(changes.to_string());
    }
    if let (Some(keys), Some(m)) = (keys, membership) {
        parts.push(format!(
            "membership keys: {}, sending with {}",
            keys.len(),
            new.membership
                .key_paths()
                .first()
                .map_or("?".into(), |p| p.display().to_string())
        ));
        m.shared.change(|mach, _| mach.set_keys(keys));
    }
    let mut message = parts.join("; ");
    *running = new;
    if let (Some((_, w)), Some(m)) = (changes.weight, membership) {
        if m.weights.current() != w {
            message += &format!(
                " (the weight {} set at run time stays: `herd weight config` takes the config's)",
                m.weights.current()
            );
        }
    }
    tracing::info!("reload: {message}");
    Outcome { ok: true, message }
}

fn apply(
    changes: &Changes,
    running: &Config,
    new: &Config,
    node: &RunningNode,
    membership: Option<&MembershipHandle>,
) -> Result<(), String> {
    let farm_changed = changes.farm_changed();
    if farm_changed || changes.polling {
        if let Err(e) = node.reconfigure(new) {
            // Back to what ran, as far as it goes.
            if let Err(back) = node.reconfigure(running) {
                tracing::error!("reload: going back to the running config failed too: {back}");
            }
            return Err(format!(
                "could not apply the VIPs, rules and polling ({e}); the node keeps the config it runs"
            ));
        }
        if let (true, Some(m)) = (farm_changed, membership) {
            m.moves.set_served(new);
            let farm = crate::farm::farm_digest(new);
            m.shared.change(|mach, t| mach.set_farm(t, farm));
        }
    }
    if let (Some((_, w)), Some(m)) = (changes.weight, membership) {
        let now = m.weights.set_configured(w);
        m.shared.change(|mach, t| mach.set_weight(t, now));
    }
    Ok(())
}
