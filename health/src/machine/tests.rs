use super::*;

const S: Duration = Duration::from_secs(1);

fn settings(checkers: &[(&str, CheckerAction)], scripts: bool) -> Settings {
    Settings {
        checkers: checkers
            .iter()
            .map(|(name, action)| CheckerSpec {
                name: name.to_string(),
                action: *action,
                policy: Policy {
                    failures_before_down: 2,
                    successes_before_up: 1,
                },
            })
            .collect(),
        scripts: [scripts; 4],
        maxloop: 2,
        loop_window: Duration::from_secs(60),
    }
}

fn events(m: &mut Machine) -> Vec<Event> {
    std::iter::from_fn(|| m.poll_event()).collect()
}

fn scripts_asked(ev: &[Event]) -> Vec<(Script, NodeState, NodeState, &'static str)> {
    ev.iter()
        .filter_map(|e| match e {
            Event::RunScript(r) => Some((r.script, r.current, r.next, r.action)),
            _ => None,
        })
        .collect()
}

/// Runs every script asked for to success; returns the scripts run.
fn finish_scripts(m: &mut Machine, now: Duration) -> Vec<Script> {
    let mut run = Vec::new();
    for _ in 0..10 {
        let Some(s) = m.running_script() else { break };
        run.push(s);
        m.script_done(now, true, "exit 0");
    }
    run
}

/// A node with scripts and one checker `name` (action `action`), started
/// and its start scripts done.
fn started(name: &str, action: CheckerAction) -> Machine {
    let mut m = Machine::new(settings(&[(name, action)], true));
    m.command(Duration::ZERO, Command::Start).unwrap();
    finish_scripts(&mut m, S);
    m
}

fn up() -> Status {
    Status {
        state: NodeState::Up,
        transient: false,
    }
}

fn fail(m: &mut Machine, now: Duration, i: usize) {
    m.checker_result(now, i, false, "refused".into());
    m.checker_result(now, i, false, "refused".into());
}

#[test]
fn a_node_without_checkers_or_scripts_is_up_at_once() {
    let mut m = Machine::new(settings(&[], false));
    assert_eq!(m.status().state, NodeState::Stop);
    assert!(!m.status().owns_buckets());
    m.command(Duration::ZERO, Command::Start).unwrap();
    assert_eq!(m.status(), up());
    assert!(m.status().owns_buckets());
    let ev = events(&mut m);
    assert!(scripts_asked(&ev).is_empty());
    assert!(matches!(ev.last(), Some(Event::StateChanged { to, .. }) if *to == up()));
}

#[test]
fn start_runs_prestart_then_start_and_is_transient_meanwhile() {
    let mut m = Machine::new(settings(&[], true));
    m.command(Duration::ZERO, Command::Start).unwrap();
    assert_eq!(
        m.status(),
        Status {
            state: NodeState::Wait,
            transient: true
        }
    );
    assert!(!m.status().owns_buckets());
    assert_eq!(
        scripts_asked(&events(&mut m)),
        [(Script::Prestart, NodeState::Stop, NodeState::Up, "start")]
    );
    m.script_done(S, true, "exit 0");
    assert_eq!(
        scripts_asked(&events(&mut m)),
        [(Script::Start, NodeState::Stop, NodeState::Up, "start")]
    );
    assert!(
        !m.status().owns_buckets(),
        "transient until the start script ends"
    );
    m.script_done(S, true, "exit 0");
    assert_eq!(m.status(), up());
}

#[test]
fn unconfigured_scripts_are_skipped() {
    let mut s = settings(&[], false);
    s.scripts = [false, true, false, false];
    let mut m = Machine::new(s);
    m.command(Duration::ZERO, Command::Start).unwrap();
    assert_eq!(finish_scripts(&mut m, S), [Script::Start]);
    m.command(S, Command::Stop).unwrap();
    assert_eq!(m.status().state, NodeState::Stop);
    assert!(finish_scripts(&mut m, S).is_empty());
}

#[test]
fn waits_until_every_checker_is_up() {
    let mut m = Machine::new(settings(
        &[("web", CheckerAction::Wait), ("db", CheckerAction::Restart)],
        false,
    ));
    m.command(Duration::ZERO, Command::Start).unwrap();
    assert_eq!(
        m.status(),
        Status {
            state: NodeState::Wait,
            transient: false
        }
    );
    assert!(m.reason().contains("web not yet tested"), "{}", m.reason());
    m.checker_result(S, 0, true, String::new());
    assert_eq!(m.status().state, NodeState::Wait);
    m.checker_result(S, 1, true, String::new());
    assert_eq!(m.status(), up());
}

#[test]
fn wait_action_withdraws_until_the_checker_passes() {
    let mut m = started("web", CheckerAction::Wait);
    m.checker_result(S, 0, true, String::new());
    assert_eq!(m.status(), up());
    events(&mut m);
    fail(&mut m, 2 * S, 0);
    assert_eq!(m.status().state, NodeState::Wait);
    assert!(!m.status().transient);
    let ev = events(&mut m);
    assert!(scripts_asked(&ev).is_empty(), "wait runs no script");
    assert!(ev.iter().any(|e| matches!(
        e,
        Event::CheckerChanged {
            to: Verdict::Down,
            ..
        }
    )));
    // Stays in WAIT however long it fails.
    for i in 0..20 {
        m.checker_result(3 * S + i * S, 0, false, "refused".into());
    }
    assert_eq!(m.status().state, NodeState::Wait);
    m.checker_result(30 * S, 0, true, String::new());
    assert_eq!(m.status(), up());
}

#[test]
fn restart_action_runs_stop_then_start_and_rejoins_when_healthy() {
    let mut m = started("app", CheckerAction::Restart);
    m.checker_result(S, 0, true, String::new());
    assert_eq!(m.status(), up());
    events(&mut m);
    fail(&mut m, 2 * S, 0);
    assert!(!m.status().owns_buckets(), "withdrawn at once");
    let ev = events(&mut m);
    assert!(ev.contains(&Event::ActionTaken {
        checker: "app".into(),
        action: CheckerAction::Restart
    }));
    assert_eq!(
        scripts_asked(&ev),
        [(Script::Stop, NodeState::Up, NodeState::Up, "restart")]
    );
    assert_eq!(finish_scripts(&mut m, 2 * S), [Script::Stop, Script::Start]);
    assert_eq!(
        m.status().state,
        NodeState::Wait,
        "until the checker passes again"
    );
    m.checker_result(3 * S, 0, true, String::new());
    assert_eq!(m.status(), up());
}

#[test]
fn stopstart_runs_all_four_scripts() {
    let mut m = started("app", CheckerAction::Stopstart);
    m.checker_result(S, 0, true, String::new());
    fail(&mut m, 2 * S, 0);
    assert_eq!(
        finish_scripts(&mut m, 2 * S),
        [
            Script::Stop,
            Script::Poststop,
            Script::Prestart,
            Script::Start
        ]
    );
    assert_eq!(m.status().state, NodeState::Wait);
}

#[test]
fn stop_action_stops_the_node_and_says_why() {
    let mut m = started("disk", CheckerAction::Stop);
    m.checker_result(S, 0, true, String::new());
    m.checker_result(2 * S, 0, false, "full".into());
    m.checker_result(2 * S, 0, false, "full".into());
    assert_eq!(
        finish_scripts(&mut m, 2 * S),
        [Script::Stop, Script::Poststop]
    );
    assert_eq!(m.status().state, NodeState::Stop);
    assert!(
        m.reason().contains("checker disk down (full)"),
        "{}",
        m.reason()
    );
    // Results in STOP change nothing; only the operator starts it again.
    m.checker_result(3 * S, 0, true, String::new());
    assert_eq!(m.status().state, NodeState::Stop);
}

#[test]
fn the_worst_action_wins() {
    let mut m = Machine::new(settings(
        &[
            ("a", CheckerAction::Wait),
            ("b", CheckerAction::Stop),
            ("c", CheckerAction::Restart),
        ],
        true,
    ));
    m.command(Duration::ZERO, Command::Start).unwrap();
    finish_scripts(&mut m, S);
    m.checker_result(S, 1, true, String::new());
    fail(&mut m, S, 0);
    fail(&mut m, S, 2);
    // c's restart ran; now b fails too while c is down again.
    finish_scripts(&mut m, S);
    m.checker_result(S, 0, false, String::new());
    m.checker_result(S, 0, false, String::new());
    m.checker_result(S, 1, false, String::new());
    m.checker_result(S, 1, false, String::new());
    let ev = events(&mut m);
    assert!(ev.contains(&Event::ActionTaken {
        checker: "b".into(),
        action: CheckerAction::Stop
    }));
    finish_scripts(&mut m, S);
    assert_eq!(m.status().state, NodeState::Stop);
}

#[test]
fn restart_loop_limit_stops_the_node() {
    // maxloop 2 within 60 s: the third restart in the window stops.
    let mut m = started("app", CheckerAction::Restart);
    let mut now = S;
    let mut restarts = 0;
    for _ in 0..5 {
        m.checker_result(now, 0, true, String::new());
        assert_eq!(m.status(), up());
        fail(&mut m, now, 0);
        let ran = finish_scripts(&mut m, now);
        if m.status().state == NodeState::Stop {
            assert_eq!(ran, [Script::Stop, Script::Poststop]);
            break;
        }
        restarts += 1;
        now += 10 * S;
    }
    assert_eq!(restarts, 2);
    assert_eq!(m.status().state, NodeState::Stop);
    assert!(
        m.reason()
            .starts_with("restart loop limit: 2 restarts within 60 s"),
        "{}",
        m.reason()
    );
}

#[test]
fn restarts_outside_the_window_do_not_count() {
    let mut m = started("app", CheckerAction::Restart);
    let mut now = S;
    for _ in 0..10 {
        m.checker_result(now, 0, true, String::new());
        fail(&mut m, now, 0);
        finish_scripts(&mut m, now);
        assert_ne!(m.status().state, NodeState::Stop);
        now += 31 * S; // two restarts never fall within 60 s... plus one
    }
}

#[test]
fn a_failed_start_script_stops_the_node() {
    let mut m = Machine::new(settings(&[], true));
    m.command(Duration::ZERO, Command::Start).unwrap();
    m.script_done(S, true, "exit 0"); // prestart
    m.script_done(S, false, "exit status 3"); // start
    assert_eq!(
        m.status(),
        Status {
            state: NodeState::Stop,
            transient: true
        }
    );
    assert_eq!(finish_scripts(&mut m, S), [Script::Stop, Script::Poststop]);
    assert_eq!(m.status().state, NodeState::Stop);
    assert_eq!(m.reason(), "start script failed: exit status 3");
}

#[test]
fn a_failed_stop_script_does_not_block_the_stop() {
    let mut m = Machine::new(settings(&[], true));
    m.command(Duration::ZERO, Command::Start).unwrap();
    finish_scripts(&mut m, S);
    m.command(S, Command::Stop).unwrap();
    m.script_done(S, false, "exit status 1");
    m.script_done(S, true, "exit 0");
    assert_eq!(m.status().state, NodeState::Stop);
}

#[test]
fn operator_commands() {
    let mut m = Machine::new(settings(&[], true));
    assert_eq!(
        m.command(Duration::ZERO, Command::Stop),
        Err(Refused::AlreadyStopped)
    );
    m.command(Duration::ZERO, Command::Start).unwrap();
    assert_eq!(
        m.command(Duration::ZERO, Command::Stop),
        Err(Refused::Busy("start"))
    );
    finish_scripts(&mut m, S);
    assert!(matches!(
        m.command(S, Command::Start),
        Err(Refused::AlreadyStarted(_))
    ));
    events(&mut m);
    m.command(S, Command::Stop).unwrap();
    assert!(
        !m.status().owns_buckets(),
        "withdrawn before the stop script"
    );
    assert_eq!(
        scripts_asked(&events(&mut m)),
        [(Script::Stop, NodeState::Up, NodeState::Stop, "stop")]
    );
    finish_scripts(&mut m, S);
    assert_eq!(m.status().state, NodeState::Stop);
    assert_eq!(m.reason(), "stopped by the operator");
    m.command(S, Command::Restart).unwrap();
    assert_eq!(
        finish_scripts(&mut m, S),
        [Script::Prestart, Script::Start],
        "restart from STOP is a start"
    );
    events(&mut m);
    m.command(S, Command::Restart).unwrap();
    assert_eq!(
        scripts_asked(&events(&mut m)),
        [(Script::Stop, NodeState::Up, NodeState::Up, "restart")]
    );
    assert_eq!(
        finish_scripts(&mut m, S),
        [
            Script::Stop,
            Script::Poststop,
            Script::Prestart,
            Script::Start
        ]
    );
    assert_eq!(m.status(), up());
    m.command(S, Command::Drain).unwrap();
    finish_scripts(&mut m, S);
    assert_eq!(m.status().state, NodeState::Stop);
    assert_eq!(m.reason(), "drained by the operator");
}

#[test]
fn checkers_off_ignores_verdicts_and_on_applies_them() {
    let mut m = started("app", CheckerAction::Restart);
    assert_eq!(m.status().state, NodeState::Wait);
    m.set_checkers(S, false);
    assert_eq!(m.status(), up());
    fail(&mut m, S, 0);
    assert_eq!(m.status(), up(), "no action while off");
    assert!(m.running_script().is_none());
    m.set_checkers(2 * S, true);
    assert_eq!(
        m.running_script(),
        Some(Script::Stop),
        "the restart runs now"
    );
}

proptest::proptest! {
    /// Whatever happens, the node owns buckets only when UP and not
    /// running a script, and a stop always reaches STOP.
    #[test]
    fn never_owns_buckets_while_transient(ops in proptest::collection::vec((0u8..7, 0usize..3, proptest::bool::ANY), 0..200)) {
        let mut m = Machine::new(settings(
            &[("a", CheckerAction::Wait), ("b", CheckerAction::Restart), ("c", CheckerAction::Stopstart)],
            true,
        ));
        let mut now = Duration::ZERO;
        for (op, i, ok) in ops {
            now += Duration::from_millis(700);
            match op {
                0 => { let _ = m.command(now, Command::Start); }
                1 => { let _ = m.command(now, Command::Stop); }
                2 => { let _ = m.command(now, Command::Restart); }
                3 => m.script_done(now, ok, "x"),
                4 => m.set_checkers(now, ok),
                _ => m.checker_result(now, i, ok, String::new()),
            }
            let st = m.status();
            proptest::prop_assert_eq!(st.owns_buckets(), st.state == NodeState::Up && !st.transient);
            if m.running_script().is_some() {
                proptest::prop_assert!(st.transient && !st.owns_buckets());
            }
            while m.poll_event().is_some() {}
        }
        // Let scripts finish, then stop: the node reaches STOP.
        finish_scripts(&mut m, now);
        if m.status().state != NodeState::Stop {
            m.command(now, Command::Stop).unwrap();
            finish_scripts(&mut m, now);
        }
        proptest::prop_assert_eq!(m.status().state, NodeState::Stop);
    }
}

#[test]
fn a_checker_added_at_run_time_does_not_withdraw_a_healthy_node_until_it_fails() {
    let mut m = started("web", CheckerAction::Wait);
    m.checker_result(S, 0, true, "ok".into());
    assert_eq!(m.status(), up());
    // "web" kept (same probe), "db" added: still UP while "db" is untested.
    let new = settings(
        &[("web", CheckerAction::Restart), ("db", CheckerAction::Wait)],
        true,
    );
    m.reconfigure(2 * S, new, &[true, false]);
    assert_eq!(m.status(), up(), "{}", m.reason());
    let checkers = m.checkers();
    assert_eq!(checkers[0].verdict, Verdict::Up, "the kept verdict stands");
    assert_eq!(checkers[0].action, CheckerAction::Restart, "its new action");
    assert_eq!(checkers[1].verdict, Verdict::Unknown);
    // Another checker's change does not make the untested one count...
    m.checker_result(3 * S, 0, true, "ok".into());
    assert_eq!(m.status(), up());
    // ...its own failure does.
    fail(&mut m, 4 * S, 1);
    assert_eq!(m.status().state, NodeState::Wait, "{}", m.reason());
    m.checker_result(5 * S, 1, true, "ok".into());
    assert_eq!(m.status(), up());
}

#[test]
fn a_changed_checker_starts_again_and_a_removed_one_stops_counting() {
    let mut m = started("web", CheckerAction::Wait);
    fail(&mut m, S, 0);
    assert_eq!(m.status().state, NodeState::Wait);
    // The waiting node's checker removed: UP at once.
    m.reconfigure(2 * S, settings(&[], true), &[]);
    assert_eq!(m.status(), up(), "{}", m.reason());
    // Its probe changed (keep = false): its verdict goes.
    let mut m = started("web", CheckerAction::Wait);
    m.checker_result(S, 0, true, "ok".into());
    m.reconfigure(
        2 * S,
        settings(&[("web", CheckerAction::Wait)], true),
        &[false],
    );
    assert_eq!(m.checkers()[0].verdict, Verdict::Unknown);
    assert_eq!(m.status(), up());
    // A restart tests every checker from scratch again: no exemption.
    m.command(3 * S, Command::Restart).unwrap();
    finish_scripts(&mut m, 3 * S);
    assert_eq!(m.status().state, NodeState::Wait, "{}", m.reason());
}

#[test]
fn scripts_removed_at_run_time_are_skipped_by_the_next_procedure() {
    let mut m = started("web", CheckerAction::Wait);
    m.reconfigure(S, settings(&[("web", CheckerAction::Wait)], false), &[true]);
    m.command(2 * S, Command::Stop).unwrap();
    assert_eq!(finish_scripts(&mut m, 2 * S), Vec::<Script>::new());
    assert_eq!(m.status().state, NodeState::Stop);
}
