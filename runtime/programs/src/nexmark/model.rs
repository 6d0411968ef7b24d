//! The Nexmark data model: people who sell and bid, auctions, and bids, as the benchmark's
//! generator produces them.
//!
//! Field names follow the benchmark's schema (snake_case), ids, prices and times are `i64` as
//! in the reference (SQL `BIGINT`), so results can be compared with other implementations.

use serde::{Deserialize, Serialize};

/// A person who can sell items and bid on auctions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Person {
    /// Person id, starting at [`super::FIRST_PERSON_ID`].
    pub id: i64,
    /// First and last name.
    pub name: String,
    /// Email address.
    pub email_address: String,
    /// Credit card number: four groups of four digits.
    pub credit_card: String,
    /// City.
    pub city: String,
    /// US state code.
    pub state: String,
    /// Event time, in ms since the Unix epoch.
    pub date_time: i64,
    /// Padding that brings the event to its configured average size.
    pub extra: String,
}

/// An item put up for auction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Auction {
    /// Auction id, starting at [`super::FIRST_AUCTION_ID`].
    pub id: i64,
    /// Name of the item.
    pub item_name: String,
    /// Description of the item.
    pub description: String,
    /// Initial bid, in cents.
    pub initial_bid: i64,
    /// Reserve price, in cents; never below the initial bid.
    pub reserve: i64,
    /// Event time, in ms since the Unix epoch.
    pub date_time: i64,
    /// When the auction closes, in ms since the Unix epoch.
    pub expires: i64,
    /// Id of the selling person.
    pub seller: i64,
    /// Category id, starting at [`super::FIRST_CATEGORY_ID`].
    pub category: i64,
    /// Padding that brings the event to its configured average size.
    pub extra: String,
}

/// A bid on an auction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bid {
    /// Id of the auction bid on.
    pub auction: i64,
    /// Id of the bidding person.
    pub bidder: i64,
    /// Price, in cents.
    pub price: i64,
    /// The channel that introduced the bid.
    pub channel: String,
    /// The URL of the bid.
    pub url: String,
    /// Event time, in ms since the Unix epoch.
    pub date_time: i64,
    /// Padding that brings the event to its configured average size.
    pub extra: String,
}

/// One event of the Nexmark stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// A new person registered.
    Person(Person),
    /// A new auction opened.
    Auction(Auction),
    /// A bid was placed.
    Bid(Bid),
}

impl Event {
    /// The event time, in ms since the Unix epoch.
    pub fn date_time(&self) -> i64 {
        match self {
            Event::Person(p) => p.date_time,
            Event::Auction(a) => a.date_time,
            Event::Bid(b) => b.date_time,
        }
    }

    /// The bid, if this event is one.
    pub fn as_bid(&self) -> Option<&Bid> {
        match self {
            Event::Bid(b) => Some(b),
            _ => None,
        }
    }
}
