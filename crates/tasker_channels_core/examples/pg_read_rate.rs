//! How fast tokio-postgres alone reads notifications on this machine: the ceiling any
//! listener built on it can reach, whatever it does with a notification afterwards.
//!
//! Connects, LISTENs on one channel, prints `listening` on stdout, then counts notifications
//! straight out of `Connection::poll_message` (nothing is queued, converted or delivered)
//! until it has `COUNT`, and prints `{"notifications":COUNT,"seconds":S}`. The clock starts at
//! the first notification, so it measures reading only, not the sender's start-up.
//!
//! ```text
//! cargo run --release --example pg_read_rate -- "host=/tmp/pg user=postgres" bench_notify 200000
//! ```

use std::future::poll_fn;
use std::io::Write;
use std::time::Instant;

use tokio_postgres::{AsyncMessage, NoTls};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: pg_read_rate CONNINFO CHANNEL COUNT";
    let conninfo = args.next().ok_or(usage)?;
    let channel = args.next().ok_or(usage)?;
    let count: u64 = args.next().ok_or(usage)?.parse()?;

    let (client, mut connection) = tokio_postgres::connect(&conninfo, NoTls).await?;
    let listen = format!("LISTEN \"{}\"", channel.replace('"', "\"\""));
    // The LISTEN completes only while the connection is driven; drive it alongside.
    {
        let mut listening = std::pin::pin!(client.batch_execute(&listen));
        loop {
            tokio::select! {
                done = &mut listening => { done?; break; }
                message = poll_fn(|cx| connection.poll_message(cx)) => match message {
                    Some(message) => { message?; }
                    None => return Err("connection closed before LISTEN completed".into()),
                },
            }
        }
    }
    println!("listening");
    std::io::stdout().flush()?;

    let mut received = 0;
    let mut started = None;
    while received < count {
        match poll_fn(|cx| connection.poll_message(cx)).await {
            Some(Ok(AsyncMessage::Notification(_))) => {
                started.get_or_insert_with(Instant::now);
                received += 1;
            }
            Some(Ok(_)) => {}
            Some(Err(error)) => return Err(error.into()),
            None => return Err(format!("connection closed after {received} notifications").into()),
        }
    }
    let seconds = started.map_or(0.0, |at| at.elapsed().as_secs_f64());
    println!("{{\"notifications\":{count},\"seconds\":{seconds}}}");
    drop(client);
    Ok(())
}
