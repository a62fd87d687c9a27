//! The async runtime openraft runs on: tokio's, except for the clock openraft's timers read
//! (election timeouts, heartbeats, leader leases, RPC deadlines). On a thread where a
//! [`TimerClock`] was entered (a simulation enters one per node, in each of the node
//! runtime's threads) that clock is read; everywhere else, tokio's monotonic clock, so
//! production runs on real time exactly as with openraft's own tokio runtime.
//!
//! A timer clock runs at a rate of real time and can be moved forward at once: a simulation
//! makes one node's election timer fire now (`advance`), or lets its clock run fast or slow
//! against its peers' (`set_rate`), without waiting that long.
//!
//! Must never: move a clock backwards; end a sleep or timeout before its deadline on the
//! clock that set it (a sleep re-reads its clock whenever the clock is moved or its rate
//! changed, and sleeps again if it is early); or allocate per sleep on real time.

use std::cell::RefCell;
use std::future::Future;
use std::ops::{Add, AddAssign, Sub, SubAssign};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use openraft::rt::{AsyncRuntime, OptionalSend};
use openraft_rt_tokio::TokioRuntime;
use pin_project_lite::pin_project;
use tokio::time::Instant as Real;

thread_local! {
    static ENTERED: RefCell<Option<TimerClock>> = const { RefCell::new(None) };
}

/// A node's monotonic clock for openraft's timers; clones share it.
#[derive(Debug, Clone)]
pub struct TimerClock(Arc<Shared>);

#[derive(Debug)]
struct Shared {
    pace: Mutex<Pace>,
    /// Bumped whenever the clock is moved or its rate changed: sleeps re-read it.
    moved: tokio::sync::watch::Sender<u64>,
}

/// The clock read `at` at real time `real`, running `rate` times as fast since.
#[derive(Debug, Clone, Copy)]
struct Pace {
    real: Real,
    at: Real,
    rate: f64,
}

impl Pace {
    fn read(&self, now: Real) -> Real {
        self.at + now.saturating_duration_since(self.real).mul_f64(self.rate)
    }
}

impl Default for TimerClock {
    fn default() -> Self {
        TimerClock::new()
    }
}

impl TimerClock {
    /// A clock reading real time, at its rate.
    pub fn new() -> Self {
        let now = Real::now();
        TimerClock(Arc::new(Shared {
            pace: Mutex::new(Pace {
                real: now,
                at: now,
                rate: 1.0,
            }),
            moved: tokio::sync::watch::channel(0).0,
        }))
    }

    /// Makes this thread's openraft timers read this clock (call it in a runtime's
    /// `on_thread_start`, so every thread of a node's runtime reads the node's clock).
    pub fn enter(&self) {
        ENTERED.with(|c| *c.borrow_mut() = Some(self.clone()));
    }

    /// Moves the clock `by` forward at once: every timer due by then fires.
    pub fn advance(&self, by: Duration) {
        self.repace(|p| p.at += by);
    }

    /// From now on the clock runs `rate` times as fast as real time (1.0: at its pace);
    /// `rate` must be positive and finite.
    pub fn set_rate(&self, rate: f64) {
        assert!(
            rate.is_finite() && rate > 0.0,
            "a timer clock's rate: {rate}"
        );
        self.repace(|p| p.rate = rate);
    }

    /// The clock's time now.
    pub fn now(&self) -> Real {
        self.pace().read(Real::now())
    }

    fn pace(&self) -> Pace {
        *self.0.pace.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn repace(&self, change: impl FnOnce(&mut Pace)) {
        {
            let mut p = self.0.pace.lock().unwrap_or_else(|e| e.into_inner());
            let now = Real::now();
            *p = Pace {
                real: now,
                at: p.read(now),
                rate: p.rate,
            };
            change(&mut p);
        }
        self.0.moved.send_modify(|n| *n += 1);
    }

    /// Waits until the clock reads `deadline`.
    async fn sleep_until(self, deadline: Real) {
        let mut moved = self.0.moved.subscribe();
        loop {
            let pace = self.pace();
            let now = Real::now();
            let at = pace.read(now);
            if at >= deadline {
                return;
            }
            let real = now + (deadline - at).div_f64(pace.rate);
            tokio::select! {
                _ = tokio::time::sleep_until(real) => {}
                _ = moved.changed() => {}
            }
        }
    }
}

fn entered() -> Option<TimerClock> {
    ENTERED.with(|c| c.borrow().clone())
}

/// An instant of openraft's clock (see the module's comment).
#[derive(Clone, Copy, Debug, Eq, PartialEq, Ord, PartialOrd)]
pub struct TimerInstant(Real);

impl openraft::rt::Instant for TimerInstant {
    fn now() -> Self {
        ENTERED.with(|c| match &*c.borrow() {
            Some(clock) => TimerInstant(clock.now()),
            None => TimerInstant(Real::now()),
        })
    }
}

impl Add<Duration> for TimerInstant {
    type Output = Self;
    fn add(self, rhs: Duration) -> Self {
        TimerInstant(self.0 + rhs)
    }
}

impl AddAssign<Duration> for TimerInstant {
    fn add_assign(&mut self, rhs: Duration) {
        self.0 += rhs;
    }
}

impl Sub<Duration> for TimerInstant {
    type Output = Self;
    fn sub(self, rhs: Duration) -> Self {
        TimerInstant(self.0 - rhs)
    }
}

impl Sub<Self> for TimerInstant {
    type Output = Duration;
    fn sub(self, rhs: Self) -> Duration {
        self.0 - rhs.0
    }
}

impl SubAssign<Duration> for TimerInstant {
    fn sub_assign(&mut self, rhs: Duration) {
        self.0 -= rhs;
    }
}

pin_project! {
    /// A sleep of openraft's: tokio's on real time, a waiting task on a timer clock.
    #[project = SleepProj]
    pub enum TimerSleep {
        Real { #[pin] sleep: tokio::time::Sleep },
        Clock { sleep: Pin<Box<dyn Future<Output = ()> + Send>> },
    }
}

impl TimerSleep {
    fn until(deadline: TimerInstant) -> Self {
        match entered() {
            None => TimerSleep::Real {
                sleep: tokio::time::sleep_until(deadline.0),
            },
            Some(clock) => TimerSleep::Clock {
                sleep: Box::pin(clock.sleep_until(deadline.0)),
            },
        }
    }
}

impl Future for TimerSleep {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match self.project() {
            SleepProj::Real { sleep } => sleep.poll(cx),
            SleepProj::Clock { sleep } => sleep.as_mut().poll(cx),
        }
    }
}

/// A timeout's deadline passed before its future finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed;

impl std::fmt::Display for Elapsed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("deadline has elapsed")
    }
}

impl std::error::Error for Elapsed {}

pin_project! {
    /// A future with a deadline on openraft's clock.
    pub struct TimerTimeout<F> {
        #[pin]
        future: F,
        #[pin]
        sleep: TimerSleep,
    }
}

impl<F: Future> Future for TimerTimeout<F> {
    type Output = Result<F::Output, Elapsed>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(v) = this.future.poll(cx) {
            return Poll::Ready(Ok(v));
        }
        this.sleep.poll(cx).map(|()| Err(Elapsed))
    }
}

/// tokio, with openraft's clock as the module's comment says.
#[derive(Debug)]
pub struct TimerRuntime(TokioRuntime);

type Tokio = TokioRuntime;

impl AsyncRuntime for TimerRuntime {
    type JoinError = <Tokio as AsyncRuntime>::JoinError;
    type JoinHandle<T: OptionalSend + 'static> = <Tokio as AsyncRuntime>::JoinHandle<T>;
    type Sleep = TimerSleep;
    type Instant = TimerInstant;
    type TimeoutError = Elapsed;
    type Timeout<R, T: Future<Output = R> + OptionalSend> = TimerTimeout<T>;
    type ThreadLocalRng = <Tokio as AsyncRuntime>::ThreadLocalRng;
    type Mpsc = <Tokio as AsyncRuntime>::Mpsc;
    type Watch = <Tokio as AsyncRuntime>::Watch;
    type Oneshot = <Tokio as AsyncRuntime>::Oneshot;
    type Mutex<T: OptionalSend + 'static> = <Tokio as AsyncRuntime>::Mutex<T>;

    fn spawn<T>(future: T) -> Self::JoinHandle<T::Output>
    where
        T: Future + OptionalSend + 'static,
        T::Output: OptionalSend + 'static,
    {
        Tokio::spawn(future)
    }

    fn sleep(duration: Duration) -> TimerSleep {
        TimerSleep::until(<TimerInstant as openraft::rt::Instant>::now() + duration)
    }

    fn sleep_until(deadline: TimerInstant) -> TimerSleep {
        TimerSleep::until(deadline)
    }

    fn timeout<R, F: Future<Output = R> + OptionalSend>(
        duration: Duration,
        future: F,
    ) -> TimerTimeout<F> {
        Self::timeout_at(
            <TimerInstant as openraft::rt::Instant>::now() + duration,
            future,
        )
    }

    fn timeout_at<R, F: Future<Output = R> + OptionalSend>(
        deadline: TimerInstant,
        future: F,
    ) -> TimerTimeout<F> {
        TimerTimeout {
            future,
            sleep: TimerSleep::until(deadline),
        }
    }

    fn is_panic(join_error: &Self::JoinError) -> bool {
        Tokio::is_panic(join_error)
    }

    fn thread_rng() -> Self::ThreadLocalRng {
        Tokio::thread_rng()
    }

    fn new(threads: usize) -> Self {
        TimerRuntime(Tokio::new(threads))
    }

    fn block_on<F, T>(&mut self, future: F) -> T
    where
        F: Future<Output = T>,
    {
        self.0.block_on(future)
    }

    // tokio's blocking pool, not the trait's default of a new OS thread per call.
    fn spawn_blocking<F, T>(f: F) -> impl Future<Output = Result<T, std::io::Error>> + Send
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let task = tokio::task::spawn_blocking(f);
        async move { task.await.map_err(std::io::Error::other) }
    }
}

#[cfg(test)]
mod tests {
    use openraft::rt::Instant as _;

    use super::*;

    /// Runs `f` on this thread, which reads `clock`.
    fn on_clock<T>(clock: &TimerClock, f: impl Future<Output = T>) -> T {
        clock.enter();
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
            .block_on(f)
    }

    #[test]
    fn openraft_s_runtime_suite_passes() {
        openraft::rt::testing::Suite::<TimerRuntime>::test_all();
    }

    #[test]
    fn a_sleep_ends_when_its_clock_is_moved_past_its_deadline() {
        let clock = TimerClock::new();
        let mover = clock.clone();
        let started = std::time::Instant::now();
        let slept = std::thread::spawn(move || {
            on_clock(&clock, async move {
                let from = TimerInstant::now();
                TimerRuntime::sleep(Duration::from_secs(600)).await;
                TimerInstant::now() - from
            })
        });
        std::thread::sleep(Duration::from_millis(20));
        mover.advance(Duration::from_secs(600));
        let on_clock = slept.join().expect("the sleeper");
        assert!(on_clock >= Duration::from_secs(600), "{on_clock:?}");
        assert!(started.elapsed() < Duration::from_secs(60));
    }

    #[test]
    fn a_timeout_on_a_fast_clock_fires_early_in_real_time_and_never_early_on_its_clock() {
        let clock = TimerClock::new();
        clock.set_rate(50.0);
        let (result, on_clock, real) = on_clock(&clock, async move {
            let from = TimerInstant::now();
            let real = std::time::Instant::now();
            let r =
                TimerRuntime::timeout(Duration::from_secs(10), std::future::pending::<()>()).await;
            (r, TimerInstant::now() - from, real.elapsed())
        });
        assert_eq!(result, Err(Elapsed));
        assert!(on_clock >= Duration::from_secs(10), "{on_clock:?}");
        assert!(real < Duration::from_secs(5), "{real:?}");
    }

    #[test]
    fn a_thread_without_a_clock_reads_real_time() {
        let clock = TimerClock::new();
        clock.advance(Duration::from_secs(3600));
        let real = Real::now();
        let read = TimerInstant::now().0;
        assert!(read >= real && read - real < Duration::from_secs(60));
        assert!(clock.now() - real >= Duration::from_secs(3600));
    }
}
