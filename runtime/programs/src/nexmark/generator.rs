//! The Nexmark event generator, following the benchmark's reference generator (the
//! `GeneratorConfig`/`NexmarkGenerator` of Apache Beam's and Flink's Nexmark suites).
//!
//! Every event is a pure function of its event number: the number decides the kind (1 person,
//! 3 auctions and 46 bids in every block of 50), the ids it creates or refers to, and its event
//! time (`base_time + number × inter-event delay`); a random number generator seeded from the
//! number (and the configured seed) fills in the rest. That is what lets any number of source
//! subtasks split the stream without coordination and still produce exactly the same events,
//! and lets a reader resume from a stored event number.
//!
//! Differences from the reference, all deliberate:
//! - The random generator is a SplitMix64 of our own, so values differ from the Java
//!   implementation's `Random` while their distributions are the same.
//! - Bidder ids are offset by `FIRST_PERSON_ID` once, as in Beam; Flink's generator adds it
//!   twice, which makes most bidders refer to people that never exist.
//! - Channel URLs are derived from the seed instead of a process-wide random cache, so they
//!   are identical on every subtask and every run.
//! - Out-of-order groups and rate shapes are not implemented: event time grows linearly with
//!   the event number, as with the reference's defaults.

use super::model::{Auction, Bid, Event, Person};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The first person id; ids below it never occur.
pub const FIRST_PERSON_ID: i64 = 1000;
/// The first auction id; ids below it never occur.
pub const FIRST_AUCTION_ID: i64 = 1000;
/// The first category id.
pub const FIRST_CATEGORY_ID: i64 = 10;

/// People per block of [`PROPORTION_DENOMINATOR`] events.
pub const PERSON_PROPORTION: u64 = 1;
/// Auctions per block of [`PROPORTION_DENOMINATOR`] events.
pub const AUCTION_PROPORTION: u64 = 3;
/// Bids per block of [`PROPORTION_DENOMINATOR`] events.
pub const BID_PROPORTION: u64 = 46;
/// Events per block: person first, then the auctions, then the bids.
pub const PROPORTION_DENOMINATOR: u64 = PERSON_PROPORTION + AUCTION_PROPORTION + BID_PROPORTION;

/// Ids of people not created yet that bids and auctions may already refer to.
pub const PERSON_ID_LEAD: i64 = 10;
/// Ids of auctions not created yet that bids may already refer to.
pub const AUCTION_ID_LEAD: i64 = 10;
/// Hot sellers are the first person of each batch of this many people.
const HOT_SELLER_RATIO: i64 = 100;
/// Hot auctions are the first auction of each batch of this many auctions.
const HOT_AUCTION_RATIO: i64 = 100;
/// Hot bidders are the second person of each batch of this many people.
const HOT_BIDDER_RATIO: i64 = 100;
/// One bid in this many comes from a channel other than the hot ones.
const HOT_CHANNELS_RATIO: u64 = 2;
/// Number of distinct non-hot channels.
const CHANNELS_NUMBER: usize = 10_000;
/// The hot channels.
const HOT_CHANNELS: [&str; 4] = ["Google", "Facebook", "Baidu", "Apple"];
/// Few categories, so that queries grouping by category find results on small runs.
const NUM_CATEGORIES: u64 = 5;
/// Shortest random string.
const MIN_STRING_LENGTH: usize = 3;
const US_STATES: [&str; 6] = ["AZ", "CA", "ID", "OR", "WA", "WY"];
const US_CITIES: [&str; 10] = [
    "Phoenix",
    "Los Angeles",
    "San Francisco",
    "Boise",
    "Portland",
    "Bend",
    "Redmond",
    "Seattle",
    "Kent",
    "Cheyenne",
];
const FIRST_NAMES: [&str; 11] = [
    "Peter", "Paul", "Luke", "John", "Saul", "Vicky", "Kate", "Julie", "Sarah", "Deiter", "Walter",
];
const LAST_NAMES: [&str; 9] = [
    "Shultz", "Abrams", "Spencer", "White", "Bartels", "Walton", "Smith", "Jones", "Noris",
];

/// The reference generator's default event rate, in events per second of event time.
pub const DEFAULT_EVENTS_PER_SECOND: f64 = 10_000.0;

/// Parameters of the generated stream. The defaults are the reference's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GeneratorConfig {
    /// Mixed into every event's random numbers: another seed gives another stream with the
    /// same ids, kinds and times.
    pub seed: u64,
    /// Event time of event number 0, in ms since the Unix epoch.
    pub base_time: i64,
    /// Events per second of event time: event `n` happens at
    /// `base_time + n × 1e6 / events_per_second µs` (truncated to ms).
    pub events_per_second: f64,
    /// People that auctions and bids choose from when not choosing a hot one.
    pub num_active_people: i64,
    /// Recent auctions that bids choose from when not choosing a hot one.
    pub num_in_flight_auctions: i64,
    /// One bid in this many goes to a random auction; the others to a hot auction.
    pub hot_auction_ratio: u64,
    /// One auction in this many has a random seller; the others a hot seller.
    pub hot_sellers_ratio: u64,
    /// One bid in this many has a random bidder; the others a hot bidder.
    pub hot_bidders_ratio: u64,
    /// Average size of a person event, in bytes (reached with the `extra` field).
    pub avg_person_byte_size: usize,
    /// Average size of an auction event, in bytes.
    pub avg_auction_byte_size: usize,
    /// Average size of a bid event, in bytes.
    pub avg_bid_byte_size: usize,
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        Self {
            seed: 0,
            base_time: 0,
            events_per_second: DEFAULT_EVENTS_PER_SECOND,
            num_active_people: 1000,
            num_in_flight_auctions: 100,
            hot_auction_ratio: 2,
            hot_sellers_ratio: 4,
            hot_bidders_ratio: 4,
            avg_person_byte_size: 200,
            avg_auction_byte_size: 500,
            avg_bid_byte_size: 100,
        }
    }
}

impl GeneratorConfig {
    /// Checks that every parameter is usable; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.events_per_second.is_finite() && self.events_per_second > 0.0) {
            return Err(format!(
                "events_per_second must be a positive number, not {}",
                self.events_per_second
            ));
        }
        if self.num_active_people < 1 {
            return Err("num_active_people must be at least 1".into());
        }
        if self.num_in_flight_auctions < 0 {
            return Err("num_in_flight_auctions must not be negative".into());
        }
        if self.hot_auction_ratio == 0 || self.hot_sellers_ratio == 0 || self.hot_bidders_ratio == 0
        {
            return Err("hot ratios must be at least 1".into());
        }
        Ok(())
    }

    /// Microseconds of event time between two consecutive events.
    pub fn inter_event_delay_us(&self) -> f64 {
        1_000_000.0 / self.events_per_second
    }

    /// The event time of event number `n`.
    pub fn timestamp_for_event(&self, n: u64) -> i64 {
        // Same arithmetic as the reference: microseconds in floating point, truncated, then
        // whole milliseconds.
        self.base_time + ((n as f64 * self.inter_event_delay_us()) as i64) / 1000
    }
}

/// What kind of event a number produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// A [`Person`].
    Person,
    /// An [`Auction`].
    Auction,
    /// A [`Bid`].
    Bid,
}

impl EventKind {
    /// The kind of event number `n`.
    pub fn of(n: u64) -> Self {
        let rem = n % PROPORTION_DENOMINATOR;
        if rem < PERSON_PROPORTION {
            EventKind::Person
        } else if rem < PERSON_PROPORTION + AUCTION_PROPORTION {
            EventKind::Auction
        } else {
            EventKind::Bid
        }
    }
}

/// The id (without [`FIRST_PERSON_ID`]) of the last person created at or before event `n`:
/// the current one if `n` creates a person.
pub fn last_base0_person_id(n: u64) -> i64 {
    let epoch = (n / PROPORTION_DENOMINATOR) as i64;
    let mut offset = n % PROPORTION_DENOMINATOR;
    if offset >= PERSON_PROPORTION {
        // An auction or a bid: the last person is the last one of this block.
        offset = PERSON_PROPORTION - 1;
    }
    epoch * PERSON_PROPORTION as i64 + offset as i64
}

/// The id (without [`FIRST_AUCTION_ID`]) of the last auction created at or before event `n`:
/// the current one if `n` creates an auction, and -1 before the first auction.
pub fn last_base0_auction_id(n: u64) -> i64 {
    let mut epoch = (n / PROPORTION_DENOMINATOR) as i64;
    let mut offset = (n % PROPORTION_DENOMINATOR) as i64;
    let (person, auction) = (PERSON_PROPORTION as i64, AUCTION_PROPORTION as i64);
    if offset < person {
        // A person: the last auction is the last one of the previous block.
        epoch -= 1;
        offset = auction - 1;
    } else if offset >= person + auction {
        // A bid: the last auction is the last one of this block.
        offset = auction - 1;
    } else {
        offset -= person;
    }
    epoch * auction + offset
}

/// SplitMix64: tiny, fast, and good enough for synthetic data. One is seeded per event, so
/// events never depend on what other events were generated before them.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

const GOLDEN_GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl SplitMix64 {
    /// A generator starting at `state`.
    pub fn new(state: u64) -> Self {
        Self { state }
    }

    /// The generator of one event. The starting state is hashed: with raw `n × γ` states the
    /// streams of consecutive events would be shifted copies of each other.
    pub fn for_event(seed: u64, n: u64) -> Self {
        Self::new(mix64(mix64(seed.wrapping_add(GOLDEN_GAMMA)) ^ n))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN_GAMMA);
        mix64(self.state)
    }

    /// A number in `[0, n)`; 0 when `n` is 0. Multiply-shift instead of a modulo: no slow
    /// division and no bias worth speaking of for the small bounds used here.
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// A number in `[0, n)` for a positive `n`, as `i64`.
    fn below_i64(&mut self, n: i64) -> i64 {
        self.below(n.max(0) as u64) as i64
    }

    /// A number in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

/// A price in cents, log-uniform between $1 and $1,000,000.
fn next_price(rng: &mut SplitMix64) -> i64 {
    (10f64.powf(rng.next_f64() * 6.0) * 100.0).round() as i64
}

/// A string of 3 to `max_len - 1` characters: lowercase letters with `special` sprinkled in.
fn next_string(rng: &mut SplitMix64, max_len: usize, special: char) -> String {
    let len = MIN_STRING_LENGTH + rng.below((max_len - MIN_STRING_LENGTH) as u64) as usize;
    let mut s = String::with_capacity(len);
    for _ in 0..len {
        if rng.below(13) == 0 {
            s.push(special);
        } else {
            s.push(char::from(b'a' + rng.below(26) as u8));
        }
    }
    // Like Java's `trim`, which the reference applies: only blanks are trimmed.
    if special == ' ' {
        let t = s.trim();
        if t.len() != s.len() {
            return t.to_string();
        }
    }
    s
}

/// Exactly `len` lowercase letters, 13 per random draw (26^13 < 2^64) because padding is the
/// bulk of the generated bytes.
fn next_exact_string(rng: &mut SplitMix64, len: usize) -> String {
    let mut s = String::with_capacity(len);
    let mut bits = 0u64;
    let mut left = 0;
    for _ in 0..len {
        if left == 0 {
            bits = rng.next_u64();
            left = 13;
        }
        s.push(char::from(b'a' + (bits % 26) as u8));
        bits /= 26;
        left -= 1;
    }
    s
}

/// Padding such that `current_size + padding` is `avg_size` on average (±20 %).
fn next_extra(rng: &mut SplitMix64, current_size: usize, avg_size: usize) -> String {
    if current_size > avg_size {
        return String::new();
    }
    let desired = avg_size - current_size;
    let delta = (desired as f64 * 0.2).round() as usize;
    let min_size = desired - delta;
    let size = min_size
        + if delta == 0 {
            0
        } else {
            rng.below(2 * delta as u64) as usize
        };
    next_exact_string(rng, size)
}

fn base_url(rng: &mut SplitMix64) -> String {
    format!(
        "https://www.nexmark.com/{}/{}/{}/item.htm?query=1",
        next_string(rng, 5, '_'),
        next_string(rng, 5, '_'),
        next_string(rng, 5, '_')
    )
}

/// Channel names and URLs, derived from the seed once per generator.
#[derive(Debug)]
struct Channels {
    hot_urls: Vec<String>,
    urls: Vec<String>,
}

/// Salts the channel tables' random streams apart from the events' ones.
const CHANNEL_SALT: u64 = 0x6368_616e_6e65_6c73;

impl Channels {
    fn new(seed: u64) -> Self {
        let mut rng = SplitMix64::for_event(seed ^ CHANNEL_SALT, u64::MAX);
        let hot_urls = HOT_CHANNELS.iter().map(|_| base_url(&mut rng)).collect();
        let urls = (0..CHANNELS_NUMBER)
            .map(|n| {
                let mut url = base_url(&mut rng);
                // As in the reference, most channel URLs carry a channel id.
                if rng.below(10) > 0 {
                    let id = (n as i32).reverse_bits().unsigned_abs();
                    url.push_str(&format!("&channel_id={id}"));
                }
                url
            })
            .collect();
        Self { hot_urls, urls }
    }
}

/// Generates Nexmark events by number.
#[derive(Debug, Clone)]
pub struct NexmarkGenerator {
    config: GeneratorConfig,
    channels: Arc<Channels>,
}

impl NexmarkGenerator {
    /// A generator for `config` (not validated here: see [`GeneratorConfig::validate`]).
    pub fn new(config: GeneratorConfig) -> Self {
        let channels = Arc::new(Channels::new(config.seed));
        Self { config, channels }
    }

    /// The configuration.
    pub fn config(&self) -> &GeneratorConfig {
        &self.config
    }

    /// Moves event time: a restored reader continues the time line of its checkpoint.
    pub(crate) fn set_base_time(&mut self, base_time: i64) {
        self.config.base_time = base_time;
    }

    /// The event time of event number `n`.
    pub fn timestamp(&self, n: u64) -> i64 {
        self.config.timestamp_for_event(n)
    }

    /// Event number `n`.
    pub fn event(&self, n: u64) -> Event {
        let mut rng = SplitMix64::for_event(self.config.seed, n);
        let ts = self.timestamp(n);
        match EventKind::of(n) {
            EventKind::Person => Event::Person(self.person(n, &mut rng, ts)),
            EventKind::Auction => Event::Auction(self.auction(n, &mut rng, ts)),
            EventKind::Bid => Event::Bid(self.bid(n, &mut rng, ts)),
        }
    }

    /// A random person id (base 0) among the active people, plus a few not created yet (so
    /// that some auctions and bids come before their person, as in the reference).
    fn next_base0_person_id(&self, n: u64, rng: &mut SplitMix64) -> i64 {
        let num_people = last_base0_person_id(n) + 1;
        let active = num_people.min(self.config.num_active_people);
        num_people - active + rng.below_i64(active + PERSON_ID_LEAD)
    }

    /// A random auction id (base 0) among those likely still open, plus a few not created yet.
    fn next_base0_auction_id(&self, n: u64, rng: &mut SplitMix64) -> i64 {
        let max = last_base0_auction_id(n);
        let min = (max - self.config.num_in_flight_auctions).max(0);
        min + rng.below_i64(max - min + 1 + AUCTION_ID_LEAD)
    }

    fn person(&self, n: u64, rng: &mut SplitMix64, ts: i64) -> Person {
        let id = last_base0_person_id(n) + FIRST_PERSON_ID;
        let name = format!("{} {}", rng.pick(&FIRST_NAMES), rng.pick(&LAST_NAMES));
        let email_address = format!(
            "{}@{}.com",
            next_string(rng, 7, ' '),
            next_string(rng, 5, ' ')
        );
        let credit_card = format!(
            "{:04} {:04} {:04} {:04}",
            rng.below(10_000),
            rng.below(10_000),
            rng.below(10_000),
            rng.below(10_000)
        );
        let city = rng.pick(&US_CITIES).to_string();
        let state = rng.pick(&US_STATES).to_string();
        let size =
            8 + name.len() + email_address.len() + credit_card.len() + city.len() + state.len();
        let extra = next_extra(rng, size, self.config.avg_person_byte_size);
        Person {
            id,
            name,
            email_address,
            credit_card,
            city,
            state,
            date_time: ts,
            extra,
        }
    }

    fn auction(&self, n: u64, rng: &mut SplitMix64, ts: i64) -> Auction {
        let id = last_base0_auction_id(n) + FIRST_AUCTION_ID;
        let seller = FIRST_PERSON_ID
            + if rng.below(self.config.hot_sellers_ratio) > 0 {
                // The first person of the latest batch of HOT_SELLER_RATIO people.
                (last_base0_person_id(n) / HOT_SELLER_RATIO) * HOT_SELLER_RATIO
            } else {
                self.next_base0_person_id(n, rng)
            };
        let category = FIRST_CATEGORY_ID + rng.below(NUM_CATEGORIES) as i64;
        let initial_bid = next_price(rng);
        let expires = ts + self.next_auction_length_ms(n, rng, ts);
        let item_name = next_string(rng, 20, ' ');
        let description = next_string(rng, 100, ' ');
        let reserve = initial_bid + next_price(rng);
        let size = 8 + item_name.len() + description.len() + 8 + 8 + 8 + 8 + 8;
        let extra = next_extra(rng, size, self.config.avg_auction_byte_size);
        Auction {
            id,
            item_name,
            description,
            initial_bid,
            reserve,
            date_time: ts,
            expires,
            seller,
            category,
            extra,
        }
    }

    /// An auction length averaging the event time it takes to create `num_in_flight_auctions`
    /// more auctions, so that about that many are open at any time.
    fn next_auction_length_ms(&self, n: u64, rng: &mut SplitMix64, ts: i64) -> i64 {
        let events_for_auctions = self.config.num_in_flight_auctions.max(0) as u64
            * PROPORTION_DENOMINATOR
            / AUCTION_PROPORTION;
        let future = self.timestamp(n.saturating_add(events_for_auctions));
        let horizon = future - ts;
        1 + rng.below_i64((horizon * 2).max(1))
    }

    fn bid(&self, n: u64, rng: &mut SplitMix64, ts: i64) -> Bid {
        let auction = FIRST_AUCTION_ID
            + if rng.below(self.config.hot_auction_ratio) > 0 {
                // The first auction of the latest batch of HOT_AUCTION_RATIO auctions.
                (last_base0_auction_id(n) / HOT_AUCTION_RATIO) * HOT_AUCTION_RATIO
            } else {
                self.next_base0_auction_id(n, rng)
            };
        let bidder = FIRST_PERSON_ID
            + if rng.below(self.config.hot_bidders_ratio) > 0 {
                // The second person of the latest batch, so hot bidders and hot sellers differ.
                (last_base0_person_id(n) / HOT_BIDDER_RATIO) * HOT_BIDDER_RATIO + 1
            } else {
                self.next_base0_person_id(n, rng)
            };
        let price = next_price(rng);
        let (channel, url) = if rng.below(HOT_CHANNELS_RATIO) > 0 {
            let i = rng.below(HOT_CHANNELS.len() as u64) as usize;
            (
                HOT_CHANNELS[i].to_string(),
                self.channels.hot_urls[i].clone(),
            )
        } else {
            let i = rng.below(CHANNELS_NUMBER as u64) as usize;
            (format!("channel-{i}"), self.channels.urls[i].clone())
        };
        let extra = next_extra(rng, 8 + 8 + 8 + 8, self.config.avg_bid_byte_size);
        Bid {
            auction,
            bidder,
            price,
            channel,
            url,
            date_time: ts,
            extra,
        }
    }
}
