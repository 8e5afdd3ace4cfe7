//! `mqadmin`: Apache's command names (matched case-insensitively), flags and column headers,
//! talking to our name servers and store nodes. Differences from Apache: a failing command
//! exits 1 with a one-line error instead of printing a stack trace and exiting 0.

use clap::{Arg, ArgAction, ArgMatches, Command};
use rmq_common::time::now_ms;
use rmq_proto::namesrv::namesrv_service_client::NamesrvServiceClient;
use rmq_proto::namesrv::{
    BrokerLive, ClusterInfoRequest, GetRouteRequest, GetRouteResponse, TopicListRequest,
};
use rmq_proto::store::store_service_client::StoreServiceClient;
use rmq_proto::store::{
    ConsumerProgressRequest, DeleteGroupRequest, DeleteTopicRequest, GroupConfig,
    RuntimeInfoRequest, TopicConfig, TopicStatusRequest, UpsertGroupRequest, UpsertTopicRequest,
};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
use tonic::transport::Channel;

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

const NAMESRV_HELP: &str = "Name server address list, eg: '192.168.0.1:9876;192.168.0.2:9876'";

fn opt(short: char, long: &'static str, help: &'static str) -> Arg {
    Arg::new(long)
        .short(short)
        .long(long)
        .help(help)
        .num_args(1)
}

fn switch(short: char, long: &'static str, help: &'static str) -> Arg {
    Arg::new(long)
        .short(short)
        .long(long)
        .help(help)
        .action(ArgAction::SetTrue)
}

fn base(name: &'static str, about: &'static str) -> Command {
    Command::new(name)
        .about(about)
        .no_binary_name(true)
        .disable_help_flag(true)
        .arg(
            Arg::new("help")
                .short('h')
                .long("help")
                .help("Print help")
                .action(ArgAction::Help),
        )
        .arg(opt('n', "namesrvAddr", NAMESRV_HELP))
}

fn commands() -> Vec<Command> {
    vec![
        base("updateTopic", "Update or create topic")
            .arg(opt('b', "brokerAddr", "create topic to which broker"))
            .arg(opt('c', "clusterName", "create topic to which cluster"))
            .arg(opt('t', "topic", "topic name").required(true))
            .arg(opt('r', "readQueueNums", "set read queue nums"))
            .arg(opt('w', "writeQueueNums", "set write queue nums"))
            .arg(opt(
                'p',
                "perm",
                "set topic's permission(2|4|6), intro[2:W 4:R; 6:RW]",
            ))
            .arg(opt('o', "order", "set topic's order(true|false)"))
            .arg(opt('a', "attributes", "attribute(+a=b,+c=d,-e)"))
            .arg(opt('u', "unit", "is unit topic (true|false)"))
            .arg(opt('s', "hasUnitSub", "has unit sub (true|false)"))
            .group(
                clap::ArgGroup::new("target")
                    .args(["brokerAddr", "clusterName"])
                    .required(true),
            ),
        base("deleteTopic", "Delete topic from broker and NameServer.")
            .arg(opt('c', "clusterName", "delete topic from which cluster").required(true))
            .arg(opt('t', "topic", "topic name").required(true)),
        base("topicList", "Fetch all topic list from name server").arg(switch(
            'c',
            "clusterModel",
            "clusterModel",
        )),
        base("topicRoute", "Examine topic route info")
            .arg(opt('t', "topic", "topic name").required(true))
            .arg(switch('l', "list", "Use list format to print data")),
        base("topicStatus", "Examine topic Status info")
            .arg(opt('t', "topic", "topic name").required(true))
            .arg(opt(
                'c',
                "cluster",
                "cluster name or lmq parent topic, lmq is used to find the route.",
            )),
        base("updateSubGroup", "Update or create subscription group")
            .arg(opt(
                'b',
                "brokerAddr",
                "create subscription group to which broker",
            ))
            .arg(opt(
                'c',
                "clusterName",
                "create subscription group to which cluster",
            ))
            .arg(opt('g', "groupName", "consumer group name").required(true))
            .arg(opt('s', "consumeEnable", "consume enable"))
            .arg(opt('m', "consumeFromMinEnable", "from min offset"))
            .arg(opt('d', "consumeBroadcastEnable", "broadcast"))
            .arg(opt('o', "consumeMessageOrderly", "consume message orderly"))
            .arg(opt('q', "retryQueueNums", "retry queue nums"))
            .arg(opt('r', "retryMaxTimes", "retry max times"))
            .arg(opt('i', "brokerId", "consumer from which broker id"))
            .arg(opt(
                'w',
                "whichBrokerWhenConsumeSlowly",
                "which broker id when consume slowly",
            ))
            .arg(opt(
                'a',
                "notifyConsumerIdsChanged",
                "notify consumerId changed",
            ))
            .arg(opt(
                'p',
                "groupRetryPolicy",
                "the json string of retry policy",
            ))
            .arg(
                Arg::new("attributes")
                    .long("attributes")
                    .num_args(1)
                    .help("attribute(+a=b,+c=d,-e)"),
            ),
        base("deleteSubGroup", "Delete subscription group from broker.")
            .arg(opt(
                'b',
                "brokerAddr",
                "delete subscription group from which broker",
            ))
            .arg(opt(
                'c',
                "clusterName",
                "delete subscription group from which cluster",
            ))
            .arg(opt('g', "groupName", "subscription group name").required(true))
            .arg(opt('r', "removeOffset", "remove offset")),
        base("clusterList", "List cluster infos")
            .arg(switch('m', "moreStats", "Print more stats"))
            .arg(opt(
                'i',
                "interval",
                "specify intervals numbers, it is in seconds",
            ))
            .arg(opt('c', "clusterName", "which cluster")),
        base("consumerProgress", "Query consumer's progress, speed")
            .arg(opt('g', "groupName", "consumer group name"))
            .arg(opt('t', "topicName", "topic name"))
            .arg(opt('s', "showClientIP", "Show Client IP per Queue"))
            .arg(opt(
                'c',
                "cluster",
                "Cluster name or lmq parent topic, lmq is used to find the route.",
            )),
        base("haStatus", "Fetch ha runtime status data")
            .arg(opt('b', "brokerAddr", "which broker to fetch"))
            .arg(opt('c', "clusterName", "which cluster"))
            .arg(opt('i', "interval", "the interval(second) of get info")),
        base("brokerStatus", "Fetch broker runtime status data")
            .arg(opt('b', "brokerAddr", "Broker address"))
            .arg(opt('c', "clusterName", "which cluster")),
        base("deleteExpiredCommitLog", "Delete expired CommitLog files")
            .arg(opt('b', "brokerAddr", "Broker address"))
            .arg(opt('c', "cluster", "cluster name")),
    ]
}

fn print_usage() {
    println!("The most commonly used mqadmin commands are:");
    for c in commands() {
        println!(
            "   {:<35} {}",
            c.get_name(),
            c.get_about().map(|a| a.to_string()).unwrap_or_default()
        );
    }
    println!("\nSee 'mqadmin help <command>' for more information on a specific command.");
}

/// Entry point; returns the process exit code.
pub async fn main(args: Vec<String>) -> i32 {
    let Some(name) = args.first() else {
        print_usage();
        return 0;
    };
    if name.eq_ignore_ascii_case("help") {
        return match args.get(1).and_then(|n| {
            commands()
                .into_iter()
                .find(|c| c.get_name().eq_ignore_ascii_case(n))
        }) {
            Some(mut c) => {
                let _ = c.print_help();
                0
            }
            None => {
                println!(
                    "The sub command {} not exist.",
                    args.get(1).map(String::as_str).unwrap_or("help")
                );
                1
            }
        };
    }
    let Some(cmd) = commands()
        .into_iter()
        .find(|c| c.get_name().eq_ignore_ascii_case(name))
    else {
        println!("The sub command {name} not exist.");
        return 1;
    };
    let cmd_name = cmd.get_name().to_string();
    let m = match cmd.try_get_matches_from(&args[1..]) {
        Ok(m) => m,
        Err(e) => {
            let _ = e.print();
            return if e.kind() == clap::error::ErrorKind::DisplayHelp {
                0
            } else {
                1
            };
        }
    };
    match run(&cmd_name, &m).await {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{cmd_name} command failed: {e}");
            1
        }
    }
}

fn namesrv_addrs(m: &ArgMatches) -> Res<Vec<String>> {
    let v = m
        .get_one::<String>("namesrvAddr")
        .cloned()
        .or_else(|| std::env::var("NAMESRV_ADDR").ok())
        .ok_or("no name server address: pass -n host:port or set NAMESRV_ADDR")?;
    Ok(v.split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect())
}

async fn channel(addr: &str) -> Res<Channel> {
    let ep = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(10));
    Ok(ep
        .connect()
        .await
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?)
}

async fn namesrv(m: &ArgMatches) -> Res<NamesrvServiceClient<Channel>> {
    let mut last = String::new();
    for a in namesrv_addrs(m)? {
        match channel(&a).await {
            Ok(c) => return Ok(NamesrvServiceClient::new(c)),
            Err(e) => last = e.to_string(),
        }
    }
    Err(last.into())
}

async fn store(addr: &str) -> Res<StoreServiceClient<Channel>> {
    Ok(StoreServiceClient::new(channel(addr).await?).max_decoding_message_size(64 * 1024 * 1024))
}

fn check(r: &Option<rmq_proto::store::Result>) -> Res<()> {
    match r {
        Some(r) if r.code == 20000 => Ok(()),
        Some(r) => Err(r.message.clone().into()),
        None => Err("no result".into()),
    }
}

async fn brokers(m: &ArgMatches) -> Res<Vec<BrokerLive>> {
    Ok(namesrv(m)
        .await?
        .get_cluster_info(ClusterInfoRequest {})
        .await?
        .into_inner()
        .brokers)
}

async fn masters_of(m: &ArgMatches, cluster: &str) -> Res<Vec<BrokerLive>> {
    let all = brokers(m).await?;
    let masters: Vec<BrokerLive> = all
        .into_iter()
        .filter(|b| b.cluster == cluster && b.broker_id == 0)
        .collect();
    if masters.is_empty() {
        return Err(format!("no master found in cluster {cluster}").into());
    }
    Ok(masters)
}

fn parse_bool(m: &ArgMatches, k: &str, default: bool) -> bool {
    m.get_one::<String>(k)
        .map(|v| v.trim().eq_ignore_ascii_case("true"))
        .unwrap_or(default)
}

fn parse_num<T: std::str::FromStr>(m: &ArgMatches, k: &str, default: T) -> Res<T> {
    match m.get_one::<String>(k) {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse()
            .map_err(|_| format!("invalid value {v:?} for -{k}").into()),
    }
}

/// `+k=v,+k2=v2,-k3`; a key without `+`/`-` is an error, as in Apache's AttributeParser.
fn parse_attributes(s: &str) -> Res<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        if let Some(kv) = item.strip_prefix('+') {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| format!("attribute {item} lacks a value"))?;
            out.insert(k.to_string(), v.to_string());
        } else if item.starts_with('-') {
            continue;
        } else {
            return Err(format!("attribute format is +key=value or -key: {item}").into());
        }
    }
    Ok(out)
}

fn perm_str(p: i32) -> String {
    format!(
        "{}{}{}",
        if p & 4 != 0 { "R" } else { "-" },
        if p & 2 != 0 { "W" } else { "-" },
        if p & 1 != 0 { "X" } else { "-" }
    )
}

async fn run(cmd: &str, m: &ArgMatches) -> Res<()> {
    match cmd {
        "updateTopic" => update_topic(m).await,
        "deleteTopic" => delete_topic(m).await,
        "topicList" => topic_list(m).await,
        "topicRoute" => topic_route(m).await,
        "topicStatus" => topic_status(m).await,
        "updateSubGroup" => update_sub_group(m).await,
        "deleteSubGroup" => delete_sub_group(m).await,
        "clusterList" => cluster_list(m).await,
        "consumerProgress" => consumer_progress(m).await,
        "brokerStatus" => broker_status(m).await,
        "haStatus" => ha_status(m).await,
        "deleteExpiredCommitLog" => delete_expired_commit_log(m).await,
        _ => Err(format!("{cmd} is not implemented").into()),
    }
}

async fn update_topic(m: &ArgMatches) -> Res<()> {
    let topic = m.get_one::<String>("topic").cloned().unwrap_or_default();
    rmq_common::validate::check_topic(&topic)?;
    let attrs = match m.get_one::<String>("attributes") {
        Some(a) => parse_attributes(a)?,
        None => BTreeMap::new(),
    };
    if let Some(t) = attrs.get("message.type")
        && ![
            "UNSPECIFIED",
            "NORMAL",
            "FIFO",
            "DELAY",
            "TRANSACTION",
            "MIXED",
        ]
        .contains(&t.as_str())
    {
        return Err(format!("value {t} is not in [UNSPECIFIED, NORMAL, FIFO, DELAY, TRANSACTION, MIXED] for message.type").into());
    }
    let read: i32 = parse_num(m, "readQueueNums", 8)?;
    let write: i32 = parse_num(m, "writeQueueNums", 8)?;
    let perm: i32 = parse_num(m, "perm", 6)?;
    if !(1..=1024).contains(&read) || !(1..=1024).contains(&write) {
        return Err("queue numbers must be between 1 and 1024".into());
    }
    let order = parse_bool(m, "order", false);
    let cfg = TopicConfig {
        name: topic.clone(),
        read_queue_nums: read,
        write_queue_nums: write,
        perm,
        attributes: attrs.clone().into_iter().collect(),
        order,
    };
    let targets = admin_targets(m)
        .await?
        .ok_or("either -b or -c is required")?;
    for addr in targets {
        let r = store(&addr)
            .await?
            .upsert_topic(UpsertTopicRequest {
                topic: Some(cfg.clone()),
            })
            .await?
            .into_inner();
        check(&r.result)?;
        println!("create topic to {addr} success.");
    }
    let attrs_str = attrs
        .iter()
        .map(|(k, v)| format!("+{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ");
    println!(
        "TopicConfig [topicName={topic}, readQueueNums={read}, writeQueueNums={write}, perm={}, topicFilterType=SINGLE_TAG, topicSysFlag=0, order={order}, attributes={{{attrs_str}}}]",
        perm_str(perm)
    );
    Ok(())
}

async fn delete_topic(m: &ArgMatches) -> Res<()> {
    let topic = m.get_one::<String>("topic").cloned().unwrap_or_default();
    let cluster = m
        .get_one::<String>("clusterName")
        .cloned()
        .unwrap_or_default();
    for b in masters_of(m, &cluster).await? {
        let r = store(&b.addr)
            .await?
            .delete_topic(DeleteTopicRequest {
                topic: topic.clone(),
            })
            .await?
            .into_inner();
        if let Err(e) = check(&r.result) {
            eprintln!("delete topic [{topic}] from broker {} failed: {e}", b.addr);
        }
    }
    println!("delete topic [{topic}] from cluster [{cluster}] success.");
    println!("delete topic [{topic}] from NameServer success.");
    Ok(())
}

async fn topic_list(m: &ArgMatches) -> Res<()> {
    let topics = namesrv(m)
        .await?
        .get_topic_list(TopicListRequest {})
        .await?
        .into_inner()
        .topics;
    if m.get_flag("clusterModel") {
        let all = brokers(m).await?;
        println!(
            "{:<20}  {:<48}  {:<48}",
            "#Cluster Name", "#Topic", "#Consumer Group"
        );
        for t in topics {
            let cluster = all.first().map(|b| b.cluster.clone()).unwrap_or_default();
            println!("{cluster:<20}  {t:<64}  {:<64}", "");
        }
    } else {
        for t in topics {
            println!("{t}");
        }
    }
    Ok(())
}

async fn route_of(m: &ArgMatches, topic: &str) -> Res<GetRouteResponse> {
    let r = namesrv(m)
        .await?
        .get_route(GetRouteRequest {
            topic: topic.into(),
        })
        .await?
        .into_inner();
    check(&r.result)?;
    Ok(r)
}

async fn topic_route(m: &ArgMatches) -> Res<()> {
    let topic = m.get_one::<String>("topic").cloned().unwrap_or_default();
    let r = route_of(m, &topic).await?;
    if m.get_flag("list") {
        println!(
            "{:<45} {:<32} {:<50} {:<10} {:<11} {:<5}",
            "#ClusterName", "#BrokerName", "#BrokerAddrs", "#ReadQueue", "#WriteQueue", "#Perm"
        );
        let (mut tr, mut tw) = (0, 0);
        let mut bds = r.broker_datas.clone();
        bds.sort_by(|a, b| a.broker_name.cmp(&b.broker_name));
        for b in &bds {
            let q = r
                .queue_datas
                .iter()
                .find(|q| q.broker_name == b.broker_name);
            let addrs: BTreeMap<_, _> = b.broker_addrs.iter().collect();
            let addrs = format!(
                "{{{}}}",
                addrs
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            let (rq, wq, p) = q
                .map(|q| (q.read_queue_nums, q.write_queue_nums, q.perm))
                .unwrap_or_default();
            tr += rq;
            tw += wq;
            println!(
                "{:<45} {:<32} {:<50} {:<10} {:<11} {:<5}",
                b.cluster, b.broker_name, addrs, rq, wq, p
            );
        }
        println!("{}", "-".repeat(158));
        println!(
            "{:<45} {:<32} {:<50} {:<10} {:<11} {:<5}",
            "Total:",
            bds.len(),
            "",
            tr,
            tw,
            ""
        );
        return Ok(());
    }
    // Apache prints fastjson output, whose brokerAddrs keys are bare integers; we keep that shape.
    let mut s = String::from("{\n\t\"brokerDatas\":[\n");
    let bds: Vec<String> = r
        .broker_datas
        .iter()
        .map(|b| {
            let addrs: BTreeMap<_, _> = b.broker_addrs.iter().collect();
            let addrs = addrs.iter().map(|(k, v)| format!("\t\t\t\t{k}:\"{v}\"")).collect::<Vec<_>>().join(",\n");
            format!(
                "\t\t{{\n\t\t\t\"brokerAddrs\":{{\n{addrs}\n\t\t\t}},\n\t\t\t\"brokerName\":\"{}\",\n\t\t\t\"cluster\":\"{}\",\n\t\t\t\"enableActingMaster\":false\n\t\t}}",
                b.broker_name, b.cluster
            )
        })
        .collect();
    s.push_str(&bds.join(",\n"));
    s.push_str("\n\t],\n\t\"filterServerTable\":{},\n\t\"queueDatas\":[\n");
    let qds: Vec<String> = r
        .queue_datas
        .iter()
        .map(|q| {
            format!(
                "\t\t{{\n\t\t\t\"brokerName\":\"{}\",\n\t\t\t\"perm\":{},\n\t\t\t\"readQueueNums\":{},\n\t\t\t\"topicSysFlag\":0,\n\t\t\t\"writeQueueNums\":{}\n\t\t}}",
                q.broker_name, q.perm, q.read_queue_nums, q.write_queue_nums
            )
        })
        .collect();
    s.push_str(&qds.join(",\n"));
    s.push_str("\n\t]\n}");
    println!("{s}");
    Ok(())
}

fn human_time(ms: i64) -> String {
    if ms <= 0 {
        return String::new();
    }
    let secs = ms / 1000;
    let days = secs.div_euclid(86400);
    let rem = secs.rem_euclid(86400);
    let (y, mo, d) = civil_from_days(days);
    format!(
        "{y:04}-{mo:02}-{d:02} {:02}:{:02}:{:02},{:03}",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        ms.rem_euclid(1000)
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (UTC).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

async fn topic_status(m: &ArgMatches) -> Res<()> {
    let topic = m.get_one::<String>("topic").cloned().unwrap_or_default();
    let r = route_of(m, &topic).await?;
    println!(
        "{:<32}  {:<4}  {:<20}  {:<20}    #Last Updated",
        "#Broker Name", "#QID", "#Min Offset", "#Max Offset"
    );
    let mut bds = r.broker_datas.clone();
    bds.sort_by(|a, b| a.broker_name.cmp(&b.broker_name));
    for b in bds {
        let Some(addr) = b
            .broker_addrs
            .get(&0)
            .or_else(|| b.broker_addrs.values().next())
        else {
            continue;
        };
        let s = store(addr)
            .await?
            .topic_status(TopicStatusRequest {
                topic: topic.clone(),
            })
            .await?
            .into_inner();
        check(&s.result)?;
        for q in s.queues {
            println!(
                "{:<32}  {:<4}  {:<20}  {:<20}    {}",
                b.broker_name,
                q.queue_id,
                q.min_offset,
                q.max_offset,
                human_time(q.last_update_ms)
            );
        }
    }
    println!();
    println!("Topic Put TPS: 0.0");
    Ok(())
}

/// The store nodes a `-b addr` or `-c cluster` command acts on (a cluster means its masters);
/// `None` when neither flag was given.
async fn admin_targets(m: &ArgMatches) -> Res<Option<Vec<String>>> {
    Ok(
        match (
            m.get_one::<String>("brokerAddr"),
            m.get_one::<String>("clusterName"),
        ) {
            (Some(b), _) => Some(vec![b.clone()]),
            (None, Some(c)) => Some(
                masters_of(m, c)
                    .await?
                    .into_iter()
                    .map(|b| b.addr)
                    .collect(),
            ),
            _ => None,
        },
    )
}

async fn update_sub_group(m: &ArgMatches) -> Res<()> {
    let group = m
        .get_one::<String>("groupName")
        .cloned()
        .unwrap_or_default();
    rmq_common::validate::check_group(&group)?;
    let Some(targets) = admin_targets(m).await? else {
        let _ = commands()
            .into_iter()
            .find(|c| c.get_name() == "updateSubGroup")
            .map(|mut c| c.print_help());
        return Ok(());
    };
    let cfg = GroupConfig {
        name: group.clone(),
        consume_enable: parse_bool(m, "consumeEnable", true),
        consume_message_orderly: parse_bool(m, "consumeMessageOrderly", false),
        retry_max_times: parse_num(m, "retryMaxTimes", 16)?,
        retry_queue_nums: parse_num(m, "retryQueueNums", 1)?,
        consume_broadcast_enable: parse_bool(m, "consumeBroadcastEnable", false),
        consume_from_min_enable: parse_bool(m, "consumeFromMinEnable", false),
        broker_id: parse_num(m, "brokerId", 0)?,
        which_broker_when_consume_slowly: parse_num(m, "whichBrokerWhenConsumeSlowly", 1)?,
        group_retry_policy: match m.get_one::<String>("groupRetryPolicy") {
            Some(p) => {
                rmq_common::retry_policy::RetryPolicy::parse(p)?;
                p.clone()
            }
            None => String::new(),
        },
    };
    for addr in targets {
        let r = store(&addr)
            .await?
            .upsert_group(UpsertGroupRequest {
                group: Some(cfg.clone()),
            })
            .await?
            .into_inner();
        check(&r.result)?;
        println!("create subscription group to {addr} success.");
        println!(
            "SubscriptionGroupConfig{{groupName={}, consumeEnable={}, consumeFromMinEnable={}, consumeBroadcastEnable={}, consumeMessageOrderly={}, retryQueueNums={}, retryMaxTimes={}, groupRetryPolicy={}, brokerId={}, whichBrokerWhenConsumeSlowly={}}}",
            cfg.name,
            cfg.consume_enable,
            cfg.consume_from_min_enable,
            cfg.consume_broadcast_enable,
            cfg.consume_message_orderly,
            cfg.retry_queue_nums,
            cfg.retry_max_times,
            if cfg.group_retry_policy.is_empty() {
                r#"{"type":"CUSTOMIZED"}"#
            } else {
                &cfg.group_retry_policy
            },
            cfg.broker_id,
            cfg.which_broker_when_consume_slowly
        );
    }
    Ok(())
}

async fn delete_sub_group(m: &ArgMatches) -> Res<()> {
    let group = m
        .get_one::<String>("groupName")
        .cloned()
        .unwrap_or_default();
    let cluster = m.get_one::<String>("clusterName").cloned();
    let Some(targets) = admin_targets(m).await? else {
        return Err("either -b or -c is required".into());
    };
    for addr in targets {
        let r = store(&addr)
            .await?
            .delete_group(DeleteGroupRequest {
                group: group.clone(),
            })
            .await?
            .into_inner();
        check(&r.result)?;
        match &cluster {
            Some(c) => println!(
                "delete subscription group [{group}] from broker [{addr}] in cluster [{c}] success."
            ),
            None => println!("delete subscription group [{group}] from broker [{addr}] success."),
        }
    }
    Ok(())
}

async fn runtime(addr: &str) -> HashMap<String, String> {
    match store(addr).await {
        Ok(mut c) => c
            .runtime_info(RuntimeInfoRequest {})
            .await
            .map(|r| r.into_inner().info)
            .unwrap_or_default(),
        Err(_) => HashMap::new(),
    }
}

fn first_tps(v: Option<&String>) -> f64 {
    v.and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0.0)
}

async fn cluster_list(m: &ArgMatches) -> Res<()> {
    let interval: Option<u64> = m.get_one::<String>("interval").and_then(|s| s.parse().ok());
    loop {
        let mut all = brokers(m).await?;
        if let Some(c) = m.get_one::<String>("clusterName") {
            all.retain(|b| &b.cluster == c);
        }
        all.sort_by(|a, b| {
            (&a.cluster, &a.broker_name, a.broker_id).cmp(&(
                &b.cluster,
                &b.broker_name,
                b.broker_id,
            ))
        });
        if m.get_flag("moreStats") {
            println!(
                "{:<16}  {:<32} {:>14} {:>14} {:>14} {:>14}",
                "#Cluster Name",
                "#Broker Name",
                "#InTotalYest",
                "#OutTotalYest",
                "#InTotalToday",
                "#OutTotalToday"
            );
            for b in &all {
                let info = runtime(&b.addr).await;
                let g = |k: &str| info.get(k).cloned().unwrap_or_else(|| "0".into());
                println!(
                    "{:<16}  {:<32} {:>14} {:>14} {:>14} {:>14}",
                    b.cluster,
                    b.broker_name,
                    0,
                    0,
                    g("msgPutTotalTodayNow"),
                    g("msgGetTotalTodayNow")
                );
            }
        } else {
            println!(
                "{:<22}  {:<22}  {:<4}  {:<22} {:<16}  {:>16}  {:>30}  {:<22}  {:<11}  {:<12}  {:<8}  {:<10}",
                "#Cluster Name",
                "#Broker Name",
                "#BID",
                "#Addr",
                "#Version",
                "#InTPS(LOAD)",
                "#OutTPS(LOAD)",
                "#Timer(Progress)",
                "#PCWait(ms)",
                "#Hour",
                "#SPACE",
                "#ACTIVATED"
            );
            for b in &all {
                let info = runtime(&b.addr).await;
                let in_tps = format!("{:9.2}(0,0ms)", first_tps(info.get("putTps")));
                let out_tps = format!(
                    "{:9.2}(0,0ms|0,0ms)",
                    first_tps(info.get("getTransferredTps"))
                );
                let boot: i64 = info
                    .get("bootTimestamp")
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(now_ms());
                let hours = (now_ms() - boot) as f64 / 3_600_000.0;
                println!(
                    "{:<22}  {:<22}  {:<4}  {:<22} {:<16}  {:>16}  {:>30}  {:<22}  {:>11}  {:<12}  {:<8}  {:>10}",
                    b.cluster,
                    b.broker_name,
                    b.broker_id,
                    b.addr,
                    info.get("brokerVersionDesc")
                        .cloned()
                        .unwrap_or_else(|| format!("V{}", b.version.replace('.', "_"))),
                    in_tps,
                    out_tps,
                    "0-0(0.0w, 0.0, 0.0)",
                    0,
                    format!("{hours:2.2}"),
                    "0.0000",
                    info.get("brokerActive")
                        .cloned()
                        .unwrap_or_else(|| "false".into()),
                );
            }
        }
        match interval {
            Some(s) => tokio::time::sleep(Duration::from_secs(s.max(1))).await,
            None => return Ok(()),
        }
    }
}

async fn consumer_progress(m: &ArgMatches) -> Res<()> {
    let all = brokers(m).await?;
    let masters: Vec<&BrokerLive> = all.iter().filter(|b| b.broker_id == 0).collect();
    let Some(group) = m.get_one::<String>("groupName") else {
        let mut groups = std::collections::BTreeSet::new();
        for b in &masters {
            let r = store(&b.addr)
                .await?
                .consumer_progress(ConsumerProgressRequest::default())
                .await?
                .into_inner();
            groups.extend(r.groups);
        }
        println!(
            "{:<64}  {:<6}  {:<24} {:<5}  {:<14}  {:<7}  #Diff Total",
            "#Group", "#Count", "#Version", "#Type", "#Model", "#TPS"
        );
        for g in groups {
            let mut diff = 0;
            for b in &masters {
                let r = store(&b.addr)
                    .await?
                    .consumer_progress(ConsumerProgressRequest {
                        group: g.clone(),
                        topic: String::new(),
                    })
                    .await?
                    .into_inner();
                diff += r
                    .queues
                    .iter()
                    .map(|q| q.broker_offset - q.consumer_offset)
                    .sum::<i64>();
            }
            println!(
                "{:<64}  {:<6}  {:<24} {:<5}  {:<14}  {:<7}  {}",
                g, 0, "OFFLINE", "PUSH", "CLUSTERING", 0, diff
            );
        }
        return Ok(());
    };
    let topic = m
        .get_one::<String>("topicName")
        .cloned()
        .unwrap_or_default();
    println!(
        "{:<64}  {:<32}  {:<4}  {:<20}  {:<20}  {:<20} {:<20}#LastTime",
        "#Topic",
        "#Broker Name",
        "#QID",
        "#Broker Offset",
        "#Consumer Offset",
        "#Diff",
        "#Inflight"
    );
    let (mut diff_total, mut inflight_total) = (0i64, 0i64);
    for b in &masters {
        let r = store(&b.addr)
            .await?
            .consumer_progress(ConsumerProgressRequest {
                group: group.clone(),
                topic: topic.clone(),
            })
            .await?
            .into_inner();
        check(&r.result)?;
        for q in r.queues {
            let diff = q.broker_offset - q.consumer_offset;
            diff_total += diff;
            inflight_total += q.inflight;
            let last = if q.last_timestamp_ms > 0 {
                human_time(q.last_timestamp_ms)[..19].to_string()
            } else {
                "N/A".into()
            };
            println!(
                "{:<64}  {:<32}  {:<4}  {:<20}  {:<20}  {:<20} {:<20} {}",
                q.topic,
                b.broker_name,
                q.queue_id,
                q.broker_offset,
                q.consumer_offset,
                diff,
                q.inflight,
                last
            );
        }
    }
    println!();
    println!("Consume TPS: {:.2}", 0.0);
    println!("Consume Diff Total: {diff_total}");
    println!("Consume Inflight Total: {inflight_total}");
    Ok(())
}

/// The nodes a command addresses: `-b addr`, or every node (slaves included) of the cluster
/// named by the `-c` argument, whose id is `cluster_arg`.
async fn node_targets(m: &ArgMatches, cluster_arg: &str) -> Res<Vec<String>> {
    match (
        m.get_one::<String>("brokerAddr"),
        m.get_one::<String>(cluster_arg),
    ) {
        (Some(b), _) => Ok(vec![b.clone()]),
        (None, Some(c)) => Ok(brokers(m)
            .await?
            .into_iter()
            .filter(|b| &b.cluster == c)
            .map(|b| b.addr)
            .collect()),
        _ => Err("either -b or -c is required".into()),
    }
}

async fn broker_status(m: &ArgMatches) -> Res<()> {
    let targets = node_targets(m, "clusterName").await?;
    let single = targets.len() == 1 && m.get_one::<String>("brokerAddr").is_some();
    for addr in targets {
        let info: BTreeMap<String, String> = runtime(&addr).await.into_iter().collect();
        for (k, v) in info {
            if single {
                println!("{k:<32}: {v}");
            } else {
                println!("{addr:<24} {k:<32}: {v}");
            }
        }
    }
    Ok(())
}

/// Runs retention now on one node (`-b`) or every node of a cluster (`-c`, slaves included, as
/// Apache does), ignoring the deleteWhen hour. Prints each deleted file, then `success`.
async fn delete_expired_commit_log(m: &ArgMatches) -> Res<()> {
    use rmq_proto::store::DeleteExpiredRequest;
    let targets = node_targets(m, "cluster").await?;
    if targets.is_empty() {
        return Err("no broker found".into());
    }
    for addr in targets {
        let r = store(&addr)
            .await?
            .delete_expired_commit_log(DeleteExpiredRequest {})
            .await?
            .into_inner();
        check(&r.result)?;
        for f in &r.deleted {
            println!("{addr} deleted {f}");
        }
        println!(
            "{addr} commitLogMinOffset {} ({} file(s) deleted)",
            r.min_offset,
            r.deleted.len()
        );
    }
    println!("success");
    Ok(())
}

async fn ha_status(m: &ArgMatches) -> Res<()> {
    let Some(targets) = admin_targets(m).await? else {
        let _ = commands()
            .into_iter()
            .find(|c| c.get_name() == "haStatus")
            .map(|mut c| c.print_help());
        return Ok(());
    };
    for addr in targets {
        let info = runtime(&addr).await;
        let g = |k: &str| info.get(k).cloned().unwrap_or_default();
        if g("brokerRole") == "SLAVE" {
            println!("\n#MasterAddr\t{}", g("haMasterAddr"));
            println!("#CommitLogMaxOffset\t{}", g("commitLogMaxOffset"));
            println!("#TransferSpeed(KB/s)\t{:.2}", 0.0);
            println!(
                "#LastReadTime\t{}",
                if g("haConnected") == "true" {
                    human_time(now_ms())
                } else {
                    String::new()
                }
            );
            println!(
                "#LastWriteTime\t{}",
                if g("haConnected") == "true" {
                    human_time(now_ms())
                } else {
                    String::new()
                }
            );
            println!("#MasterFlushOffset\t{}", g("haMasterEnd"));
            continue;
        }
        let slaves: Vec<Vec<String>> = g("haSlaves")
            .split(';')
            .filter(|s| !s.is_empty())
            .map(|s| s.split(',').map(String::from).collect())
            .filter(|v: &Vec<String>| v.len() == 4)
            .collect();
        let max_gap: i64 = 256 * 1024 * 1024;
        let in_sync = slaves
            .iter()
            .filter(|v| v[3].parse::<i64>().unwrap_or(i64::MAX) < max_gap)
            .count();
        print!(
            "\n#MasterAddr\t{addr}\n#MasterCommitLogMaxOffset\t{}\n#SlaveNum\t{}\n#InSyncSlaveNum\t{in_sync}\n",
            g("commitLogMaxOffset"),
            slaves.len()
        );
        println!(
            "{:<32}  {:<16} {:>16} {:>16} {:>16} {:>16}",
            "#SlaveAddr",
            "#SlaveAckOffset",
            "#Diff",
            "#TransferSpeed(KB/s)",
            "#Status",
            "#TransferFromWhere"
        );
        for v in slaves {
            let diff: i64 = v[3].parse().unwrap_or(0);
            let status = if diff < max_gap { "OK" } else { "Fall Behind" };
            println!(
                "{:<32}  {:<16} {:>16} {:>16.2} {:>16} {:>16}",
                v[1], v[2], diff, 0.0, status, v[2]
            );
        }
    }
    Ok(())
}
