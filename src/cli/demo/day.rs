//! The demo's cast and its working day: who plays whom in the emulated corp, and the steps of the
//! day, each a thing a WeCom user does (through the emulator, which pushes WeCom's callbacks or
//! archives the message) or a salesperson does in our sidebar (through our API). Everything here
//! is derived from the seeded corp, so the same seed gives the same day, step for step: a restart
//! replays the emulator's part of the steps already played and goes on from there.

use wecom_sdk::testkit::admin::{Action, ActionRefused};
use wecom_sdk::testkit::{EmulatorState, NewCustomer, SeedSummary};

/// The channel (联系我 `state`) the day's new customers come through, and the tag its rule sets.
pub const CHANNEL: &str = "expo-2026-autumn";
/// The tag group and tag of the channel's auto-tagging rule.
pub const CHANNEL_TAG: (&str, &str) = ("客户来源", "秋季展会");

/// A member the story names.
#[derive(Debug, Clone)]
pub struct Member {
    /// userid.
    pub id: String,
    /// Name.
    pub name: String,
}

/// Who plays whom.
#[derive(Debug, Clone)]
pub struct Cast {
    /// A department leader (the manager role).
    pub manager: Member,
    /// The salesperson whose sidebar the tour opens.
    pub salesperson: Member,
    /// The customer of the salesperson's chat in the sidebar.
    pub customer: String,
    /// A salesperson who takes a customer's money privately, then resigns.
    pub departing: Member,
    /// Two more salespeople.
    pub others: [Member; 2],
}

impl Cast {
    /// Picks the cast from the seeded corp: every department's first member leads it (set in
    /// the emulator here), the departing salesperson is the non-leader with the most customers,
    /// the manager leads their department, the salesperson is the next busiest non-leader.
    pub fn pick(wecom: &EmulatorState, corp: &str, seeded: &SeedSummary) -> anyhow::Result<Self> {
        let member = |id: &str| {
            wecom.member(corp, id).map(|m| Member {
                id: m.userid,
                name: m.name,
            })
        };
        let mut leaders = Vec::new();
        for dept in &seeded.departments {
            let first = seeded.staff.iter().find(|id| {
                wecom
                    .member(corp, id)
                    .is_some_and(|m| m.department.first() == Some(dept))
            });
            if let Some(id) = first {
                wecom.set_leader(corp, id, *dept, true);
                leaders.push(id.clone());
            }
        }
        let mut busiest: Vec<(usize, &String)> = seeded
            .staff
            .iter()
            .filter(|id| !leaders.contains(id))
            .map(|id| (wecom.customers_of(corp, id).len(), id))
            .collect();
        busiest.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
        let [departing, salesperson, other1, other2] = match busiest.as_slice() {
            [a, b, c, d, ..] => [a.1, b.1, c.1, d.1],
            _ => anyhow::bail!("the demo corp needs at least 4 salespeople besides its leaders"),
        };
        let departing_dept = wecom
            .member(corp, departing)
            .and_then(|m| m.department.first().copied());
        let manager = leaders
            .iter()
            .find(|id| {
                wecom
                    .member(corp, id)
                    .is_some_and(|m| m.department.first().copied() == departing_dept)
            })
            .or(leaders.first())
            .ok_or_else(|| anyhow::anyhow!("the demo corp has no department leader"))?;
        let customer = wecom
            .customers_of(corp, salesperson)
            .into_iter()
            .next()
            .ok_or_else(|| anyhow::anyhow!("the salesperson has no customer"))?;
        let get = |id: &str| member(id).ok_or_else(|| anyhow::anyhow!("unknown member {id}"));
        Ok(Self {
            manager: get(manager)?,
            salesperson: get(salesperson)?,
            customer,
            departing: get(departing)?,
            others: [get(other1)?, get(other2)?],
        })
    }
}

/// One step of the day.
#[derive(Debug)]
pub enum Step {
    /// Something a WeCom user does (WeCom pushes the callbacks, or archives the message).
    Wecom(Action),
    /// A customer adds a member (through the day's channel when `channel`).
    AddCustomer {
        /// The member.
        userid: String,
        /// The customer's id (fixed, so a replay gives the same one).
        external_userid: String,
        /// The customer's WeChat name.
        name: String,
        /// Came through [`CHANNEL`].
        channel: bool,
    },
    /// A salesperson writes a follow-up note in the sidebar.
    Note {
        /// The salesperson.
        userid: String,
        /// The customer.
        external_userid: String,
        /// The note.
        body: String,
    },
    /// A salesperson sets a reminder in the sidebar.
    Remind {
        /// The salesperson.
        userid: String,
        /// The customer.
        external_userid: String,
        /// What to do.
        title: String,
        /// Due in this many days.
        days: i64,
    },
    /// A salesperson moves the customer to a lifecycle stage in the sidebar.
    Stage {
        /// The salesperson.
        userid: String,
        /// The customer.
        external_userid: String,
        /// The stage.
        stage: String,
    },
}

/// A step and what it shows, in Chinese and English.
#[derive(Debug)]
pub struct Scene {
    /// The clock time the story gives it.
    pub at: &'static str,
    /// What happens.
    pub step: Step,
    /// What a person watching sees, in Chinese.
    pub zh: String,
    /// The same in English.
    pub en: String,
}

/// The id of the day's `n`th new customer.
fn new_customer_id(n: usize) -> String {
    format!("wmDemoDay{n:023}")
}

/// Everyday lines of archived chat before the day starts (the archive's history).
const EVERYDAY: &[(&str, &str)] = &[
    (
        "您好，资料已经发您邮箱了，有问题随时找我",
        "好的，收到，谢谢",
    ),
    ("王总，明天下午三点方便通个电话吗？", "可以，三点我在办公室"),
    ("上次说的样品已经寄出，单号稍后发您", "好的，到了我跟你说"),
    (
        "合同我这边盖好章了，您看下什么时候方便取",
        "周四吧，我让助理过去",
    ),
    ("新品发布会的邀请函发您了，欢迎来现场", "好，我看看时间"),
    ("发票已经开好了，走公司对公账户", "收到，财务会处理"),
    ("这个月的对账单发您了，请核对一下", "好的，我核对完回复你"),
    ("节日快乐！感谢一直以来的支持", "同乐同乐"),
];

/// The archive's history before the day: `n` everyday exchanges between members and their
/// customers, each a message and its answer.
pub fn history(wecom: &EmulatorState, corp: &str, seeded: &SeedSummary, n: usize) -> Vec<Action> {
    let mut out = Vec::with_capacity(n * 2);
    let mut i = 0usize;
    'outer: for staff in &seeded.staff {
        for customer in wecom.customers_of(corp, staff).into_iter().take(4) {
            if i >= n {
                break 'outer;
            }
            let (ask, answer) = EVERYDAY[i % EVERYDAY.len()];
            out.push(message(corp, staff, &customer, ask));
            out.push(message(corp, &customer, staff, answer));
            i += 1;
        }
    }
    out
}

fn message(corp: &str, from: &str, to: &str, content: &str) -> Action {
    Action::ChatMessage {
        corp_id: corp.to_owned(),
        from: from.to_owned(),
        to: vec![to.to_owned()],
        room_id: String::new(),
        content: content.to_owned(),
    }
}

/// The working day, in order.
pub fn script(wecom: &EmulatorState, corp: &str, cast: &Cast, seeded: &SeedSummary) -> Vec<Scene> {
    let c = corp.to_owned();
    let (s, d, m) = (&cast.salesperson, &cast.departing, &cast.manager);
    let [o1, o2] = &cast.others;
    let name_of = |ext: &str| {
        wecom
            .customer_name(corp, ext)
            .unwrap_or_else(|| "客户".to_owned())
    };
    let mut d_customers = wecom.customers_of(corp, &d.id);
    d_customers.retain(|x| *x != cast.customer);
    let o1_customer = wecom
        .customers_of(corp, &o1.id)
        .into_iter()
        .find(|x| *x != cast.customer && !d_customers.contains(x));
    let o2_customer = wecom.customers_of(corp, &o2.id).into_iter().find(|x| {
        *x != cast.customer && !d_customers.contains(x) && Some(x) != o1_customer.as_ref()
    });
    let chat = seeded.chats.first().cloned();
    let (new1, new2, new3) = (new_customer_id(1), new_customer_id(2), new_customer_id(3));
    let mut day = vec![
        Scene {
            at: "09:02",
            step: Step::AddCustomer {
                userid: s.id.clone(),
                external_userid: new1.clone(),
                name: "陈女士".to_owned(),
                channel: true,
            },
            zh: format!(
                "{} 通过「秋季展会」活码添加了客户 陈女士：自动打上「秋季展会」标签，生成 3 天、7 天回访提醒",
                s.name
            ),
            en: format!(
                "{} adds 陈女士 through the autumn-expo QR code: auto-tagged, follow-up reminders in 3 and 7 days",
                s.name
            ),
        },
        Scene {
            at: "09:05",
            step: Step::Wecom(message(
                &c,
                &new1,
                &s.id,
                "你好，我是展会上加的，想了解一下你们的年度套餐",
            )),
            zh: "陈女士发来消息（会话存档）".to_owned(),
            en: "陈女士 writes (archived chat)".to_owned(),
        },
        Scene {
            at: "09:07",
            step: Step::Wecom(message(
                &c,
                &s.id,
                &new1,
                "陈女士您好！年度套餐是 12800 元，我把报价单发您",
            )),
            zh: format!("{} 回复报价", s.name),
            en: format!("{} answers with a quote", s.name),
        },
        Scene {
            at: "09:15",
            step: Step::Note {
                userid: s.id.clone(),
                external_userid: new1.clone(),
                body: "展会客户，对年度套餐感兴趣，预算 1.5 万左右，下周二回访".to_owned(),
            },
            zh: format!("{} 在侧边栏写了跟进记录", s.name),
            en: format!("{} writes a follow-up note in the sidebar", s.name),
        },
        Scene {
            at: "09:16",
            step: Step::Stage {
                userid: s.id.clone(),
                external_userid: new1.clone(),
                stage: "意向".to_owned(),
            },
            zh: "陈女士进入「意向」阶段".to_owned(),
            en: "陈女士 moves to the 意向 (interested) stage".to_owned(),
        },
        Scene {
            at: "09:40",
            step: Step::AddCustomer {
                userid: o1.id.clone(),
                external_userid: new2,
                name: "刘总".to_owned(),
                channel: true,
            },
            zh: format!("{} 通过展会活码添加了客户 刘总", o1.name),
            en: format!("{} adds 刘总 through the expo QR code", o1.name),
        },
        Scene {
            at: "10:05",
            step: Step::AddCustomer {
                userid: d.id.clone(),
                external_userid: new3,
                name: "周先生".to_owned(),
                channel: false,
            },
            zh: format!("{} 添加了客户 周先生（扫个人二维码，不自动打标签）", d.name),
            en: format!(
                "{} adds 周先生 with a personal QR code (no auto-tag)",
                d.name
            ),
        },
        Scene {
            at: "10:30",
            step: Step::Wecom(Action::EditCustomer {
                corp_id: c.clone(),
                userid: s.id.clone(),
                external_userid: cast.customer.clone(),
                add_tags: seeded.tag_ids.first().cloned().into_iter().collect(),
                remove_tags: Vec::new(),
                remark: Some(format!("{}-老客户", name_of(&cast.customer))),
                description: None,
            }),
            zh: format!(
                "{} 在企业微信客户端里给 {} 改了备注、加了标签（编辑回调）",
                s.name,
                name_of(&cast.customer)
            ),
            en: format!(
                "{} edits {}'s remark and tags in the WeCom client (edit callback)",
                s.name,
                name_of(&cast.customer)
            ),
        },
    ];
    if let Some(x) = d_customers.first() {
        let who = name_of(x);
        day.push(Scene {
            at: "11:10",
            step: Step::Wecom(message(
                &c,
                &d.id,
                x,
                "下次直接加我私人微信 zw_1988，有优惠我第一时间告诉你",
            )),
            zh: format!("{} 引导客户 {who} 加私人微信 → 内容告警", d.name),
            en: format!(
                "{} moves customer {who} to a personal WeChat → content alert",
                d.name
            ),
        });
        day.push(Scene {
            at: "11:12",
            step: Step::Wecom(message(&c, x, &d.id, "这单能不能再便宜点？")),
            zh: format!("客户 {who} 问能不能便宜",),
            en: format!("customer {who} asks for a discount"),
        });
        day.push(Scene {
            at: "11:13",
            step: Step::Wecom(message(
                &c,
                &d.id,
                x,
                "可以，你直接转我个人支付宝，比走公司账便宜两千",
            )),
            zh: format!("{} 让客户把钱转到个人支付宝 → 「私下收款」告警", d.name),
            en: format!(
                "{} asks the customer to pay his personal Alipay → private-payment alert",
                d.name
            ),
        });
    }
    if let Some(x) = &o2_customer {
        day.push(Scene {
            at: "13:20",
            step: Step::Wecom(Action::StaffDeletesCustomer {
                corp_id: c.clone(),
                userid: o2.id.clone(),
                external_userid: x.clone(),
            }),
            zh: format!("{} 删除了客户 {} → 删除客户告警", o2.name, name_of(x)),
            en: format!(
                "{} deletes customer {} → deletion alert",
                o2.name,
                name_of(x)
            ),
        });
    }
    if let Some(x) = &o1_customer {
        day.push(Scene {
            at: "14:05",
            step: Step::Wecom(Action::CustomerDeletesStaff {
                corp_id: c.clone(),
                userid: o1.id.clone(),
                external_userid: x.clone(),
            }),
            zh: format!("客户 {} 删除了 {}（客户流失提醒）", name_of(x), o1.name),
            en: format!(
                "customer {} deletes {} (customer-loss notice)",
                name_of(x),
                o1.name
            ),
        });
    }
    if let Some(chat) = chat {
        day.push(Scene {
            at: "14:30",
            step: Step::Wecom(Action::JoinGroup {
                corp_id: c.clone(),
                chat_id: chat,
                members: vec![new1.clone()],
            }),
            zh: "陈女士加入了客户群".to_owned(),
            en: "陈女士 joins a customer group chat".to_owned(),
        });
    }
    day.push(Scene {
        at: "15:00",
        step: Step::Remind {
            userid: s.id.clone(),
            external_userid: new1,
            title: "给陈女士发合同".to_owned(),
            days: 2,
        },
        zh: format!("{} 设了提醒：两天后给陈女士发合同", s.name),
        en: format!(
            "{} sets a reminder: send 陈女士 the contract in two days",
            s.name
        ),
    });
    for (i, x) in d_customers.iter().skip(1).take(7).enumerate() {
        day.push(Scene {
            at: "16:40",
            step: Step::Wecom(Action::StaffDeletesCustomer {
                corp_id: c.clone(),
                userid: d.id.clone(),
                external_userid: x.clone(),
            }),
            zh: format!("{} 删除客户 {}（第 {} 个）", d.name, name_of(x), i + 1),
            en: format!("{} deletes customer {} (#{})", d.name, name_of(x), i + 1),
        });
    }
    day.push(Scene {
        at: "17:30",
        step: Step::Wecom(Action::StaffResigns {
            corp_id: c,
            userid: d.id.clone(),
        }),
        zh: format!(
            "{} 离职 → 离职告警，待分配客户出现在「客户继承」；主管 {} 收到通知",
            d.name, m.name
        ),
        en: format!(
            "{} resigns → departure alert, customers waiting in reassignment; manager {} is told",
            d.name, m.name
        ),
    });
    day
}

impl Step {
    /// Plays the step's part in the emulated WeCom, which pushes the callbacks WeCom would
    /// (nothing for the steps that happen in our sidebar).
    pub fn play_in_wecom(&self, wecom: &EmulatorState, corp: &str) -> Result<(), ActionRefused> {
        match self {
            Self::Wecom(action) => action.clone().apply(wecom).map(|_| ()),
            Self::AddCustomer {
                userid,
                external_userid,
                name,
                channel,
            } => {
                wecom.add_customer(
                    corp,
                    userid,
                    NewCustomer {
                        name: name.clone(),
                        external_userid: Some(external_userid.clone()),
                        state: channel.then(|| CHANNEL.to_owned()),
                        ..NewCustomer::default()
                    },
                );
                Ok(())
            }
            Self::Note { .. } | Self::Remind { .. } | Self::Stage { .. } => Ok(()),
        }
    }
}
