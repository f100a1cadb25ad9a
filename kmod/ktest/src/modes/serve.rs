// SPDX-License-Identifier: GPL-2.0-only

//! `serve [MODE] [SEED]`: a minimal helper serving ECHO, in one of the
//! modes' ways; the loop they share.

use super::echo::answer;
use super::garbage;
use super::header::{header_reattach, overwrite_header, HEADER_REQUESTS};
use super::jumps::{do_jump, JUMPS};
use super::race::{Racer, RACE_REQUESTS};
use super::random::{
    random_cqe, scribble, scribble_extents, RandomSessions, RANDOM_SESSION_MS,
    RANDOM_SESSION_REQUESTS,
};
use crate::dev::do_ioctl;
use crate::figures::Figures;
use crate::session::Session;
use crate::sys::POLLHUP;
use crate::util::{Checks, Rng};
use kgpu_common::abi::Cqe;
use kgpu_common::ioctl::KGPU_IOC_DRAIN;
use std::process::exit;
use std::sync::atomic::Ordering;

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Echo,
    Garbage,
    Silent,
    Corrupt,
    WrongData,
    Drain,
    Freeze,
    Random,
    Jumps,
    Header,
    Race,
}

pub fn serve(mode: Mode, seed: u64) -> ! {
    let mut s = Session::start();
    println!("kgpu-ktest: attached, serving");
    if matches!(mode, Mode::Random | Mode::Jumps | Mode::Header | Mode::Race) {
        println!("kgpu-ktest: seed {seed}");
    }
    let mut rng = Rng(seed);
    let mut fig = Figures::default();
    let mut printed = Figures::default();
    let mut checks = Checks { failed: 0 };
    let mut served = 0u64;
    // Hostile until its script is done (random, jumps, header).
    let mut hostile = matches!(mode, Mode::Random | Mode::Jumps | Mode::Header | Mode::Race);
    let mut racer = (mode == Mode::Race).then(|| Racer::start(&s, seed));
    // Garbage: answers already taken, posted again a round later.
    let mut late: Vec<Cqe> = Vec::new();
    // Garbage: slots we saw submitted (the others were never submitted).
    let mut seen_slots = vec![false; s.geom().cq_entries as usize];
    // Random: the current session (attach).
    let mut random = RandomSessions::new();
    let mut jumps = JUMPS.iter();
    let mut jump_after = 50u64;
    loop {
        let ev = s.wait(100);
        if ev & POLLHUP != 0 {
            if hostile && mode == Mode::Random {
                fig.hangups += 1;
                s = random.restart(s, &mut fig, &mut hostile);
                continue;
            }
            fig.print("final");
            println!("kgpu-ktest: kernel hung up after {served} requests");
            exit(0);
        }
        s.heartbeat();
        let mut posted = false;
        let mut took = 0u64;
        if mode == Mode::Garbage && !late.is_empty() {
            // Duplicates of completions the kernel has already taken.
            for c in std::mem::take(&mut late) {
                if s.push(c) {
                    fig.bad_records += 1;
                }
            }
            posted = true;
        }
        loop {
            let sqe = match s.sq.pop() {
                Ok(Some(x)) => x,
                Ok(None) => break,
                Err(e) => {
                    if hostile && mode == Mode::Random {
                        fig.helper_ring_errors += 1;
                        break;
                    }
                    println!("kgpu-ktest: submission ring: {e:?}");
                    exit(1);
                }
            };
            took += 1;
            fig.requests += 1;
            if let Some(r) = &racer {
                r.saw(fig.requests, &sqe);
            }
            if mode == Mode::Freeze && served == 100 {
                println!("kgpu-ktest: freezing");
                loop {
                    std::thread::sleep(std::time::Duration::from_secs(3600));
                }
            }
            served += 1;
            if mode == Mode::Silent {
                continue;
            }
            if hostile && mode == Mode::Random {
                random.requests += 1;
                if !random.seen.insert((sqe.slot, sqe.gen)) || sqe.slot >= s.geom().cq_entries {
                    // Read again (an index was moved) or a record we
                    // scribbled on: answered with a record of random bytes.
                    if s.push(random_cqe(&mut rng)) {
                        fig.random_records += 1;
                    }
                    posted = true;
                    continue;
                }
                let fate = rng.below(100);
                if fate >= 70 {
                    fig.scribbled_bytes += scribble_extents(&s, &mut rng, &sqe);
                    fig.data_scribbles += 1;
                    if fate < 80 {
                        let c = Cqe {
                            slot: sqe.slot,
                            gen: sqe.gen,
                            status: 1 + rng.below(9) as i32,
                            backend: rng.next() as u32,
                            bytes: 0,
                            nanos: rng.next(),
                        };
                        if s.push(c) {
                            fig.errors += 1;
                        }
                    } else if fate < 90 {
                        fig.unanswered += 1;
                    } else if s.push(random_cqe(&mut rng)) {
                        fig.unanswered += 1;
                        fig.random_records += 1;
                    }
                    posted = true;
                    continue;
                }
            }
            let cqe = answer(&sqe, s.data(), s.geom().data_size, mode == Mode::WrongData);
            if mode == Mode::Garbage {
                garbage::post_bad_records(&mut s, &sqe, cqe, &mut seen_slots, &mut fig);
            }
            if mode == Mode::Corrupt && served > 20 {
                let head = s.cq_idx().head.load(Ordering::Acquire);
                s.cq_idx().tail.store(
                    head.wrapping_add(4 * s.geom().cq_entries),
                    Ordering::Release,
                );
                s.doorbell();
                continue;
            }
            if s.push(cqe) {
                fig.answers += 1;
                if let Some(r) = &racer {
                    r.answered(fig.answers);
                }
            }
            if mode == Mode::Garbage {
                // Duplicate at once (usually in the same batch), and again
                // once the kernel has taken it.
                if s.push(cqe) {
                    fig.bad_records += 1;
                }
                late.push(cqe);
            }
            if mode == Mode::Drain && served == 200 {
                let rc = do_ioctl(&s.f, KGPU_IOC_DRAIN, std::ptr::null());
                println!("kgpu-ktest: drain requested (errno {rc})");
            }
            posted = true;
        }
        if hostile && mode == Mode::Random {
            for _ in 0..rng.below(3) {
                if s.push(random_cqe(&mut rng)) {
                    fig.random_records += 1;
                }
                posted = true;
            }
            for _ in 0..rng.below(4) {
                scribble(&mut s, &mut rng, &mut fig);
            }
        }
        if posted {
            s.doorbell();
        }
        if hostile && mode == Mode::Random {
            let own_error = s.sq.available().is_err() || s.cq.space().is_err();
            let over = random.requests >= RANDOM_SESSION_REQUESTS
                || random.start.elapsed().as_millis() >= RANDOM_SESSION_MS;
            if own_error || over {
                if own_error {
                    fig.helper_ring_errors += 1;
                }
                s = random.restart(s, &mut fig, &mut hostile);
                continue;
            }
        }
        if hostile && mode == Mode::Jumps && fig.answers >= jump_after {
            match jumps.next() {
                Some(&j) => {
                    s = do_jump(s, j, &mut checks, &mut fig);
                    jump_after = fig.answers + 50;
                }
                None => {
                    hostile = false;
                    fig.print("jumps done");
                    println!(
                        "kgpu-ktest: jumps: done, {} checks failed, serving correctly",
                        checks.failed
                    );
                }
            }
            continue;
        }
        if hostile && mode == Mode::Race && fig.answers >= RACE_REQUESTS {
            hostile = false;
            if let Some(r) = racer.take() {
                let (writes, unconsumed) = r.finish();
                fig.print("race done");
                println!(
                    "kgpu-ktest: race: done after {} answers, {writes} racing writes ({unconsumed} into unconsumed records), serving correctly",
                    fig.answers
                );
            }
        }
        if hostile && mode == Mode::Header {
            overwrite_header(&s, &mut rng);
            fig.header_overwrites += 1;
            if fig.answers >= HEADER_REQUESTS {
                hostile = false;
                s = header_reattach(s, &mut checks, &fig);
            }
        }
        if took == 0 && (fig.requests, fig.bad_records) != (printed.requests, printed.bad_records) {
            fig.print("running");
            printed = fig.clone();
        }
    }
}
