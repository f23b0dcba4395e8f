"""Scenario generator: the 24-hour best-customer promotion, announced on TV, in each channel's raw format.

Seeded and deterministic: the same arguments write the same bytes. Writes, into one folder, a file
per bundled connector (named after it, so `omnihub connectors run --all --source-dir DIR` reads them),
the product catalogue and campaigns (costs for finance), and the ground truth for identity resolution:
which person is behind each event (ground_truth.csv) and who the people are (people.csv).

The data is messy the way real data is: emails with capitals and spaces, phones in national and
international forms (overseas mobiles typed without their country code), placeholder values
("none@none.com", "0000000000") typed for customers who would not give theirs, every receipt carrying
its shared store terminal, tills that export no receipt total, a family sharing a phone, the brand's own
social account, messages naming a relative's order (sometimes before that order arrives), anonymous app
sessions, a returns portal exporting one JSON document, and a share of malformed records.
"""
from __future__ import annotations

import csv
import io
import json
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

PARIS = ZoneInfo("Europe/Paris")
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode  # one encoder: json.dumps builds one per call with options
DAY = datetime(2026, 11, 20, tzinfo=PARIS)          # the promotion day, local midnight
TV_AD = DAY + timedelta(hours=20, minutes=45)       # the ad that nobody told IT about
BRAND_HANDLE = "omnishop_official"
PLACEHOLDER_EMAIL, PLACEHOLDER_PHONE = "none@none.com", "0000000000"

# Share of events per channel (connector name), and share of each channel's events pulled into the TV spike.
CHANNEL_SHARE = {"app-sessions": 0.36, "web-orders": 0.27, "store-sales": 0.20, "support-tickets": 0.08, "social-messages": 0.07,
                 "returns": 0.02}
SPIKE_SHARE = {"app-sessions": 0.30, "web-orders": 0.20, "store-sales": 0.0, "support-tickets": 0.05, "social-messages": 0.15,
               "returns": 0.0}
CHANNELS = {"web-orders": "web", "store-sales": "store", "support-tickets": "support", "social-messages": "social",
            "app-sessions": "app", "returns": "returns"}
# Mobile prefixes of France's overseas regions (E.164 without +): dialled in France as 0690..., 0696..., 0692...
OVERSEAS_MOBILES = ("590690", "596696", "262692")
STORES_WITHOUT_TOTALS = ("MRS-01", "MRS-02")      # an older till model: lines only, no receipt total
RETURN_REASONS = ["too small", "arrived damaged", "changed my mind", "not as described", "wrong item sent"]
# Relative traffic per local hour 0..23: quiet nights, lunch and evening peaks.
HOURLY = [1, 0.6, 0.4, 0.3, 0.3, 0.5, 1, 2, 3, 4, 5, 6, 7, 6, 5, 5, 6, 7, 8, 9, 10, 9, 6, 3]
STORE_HOURS = range(9, 21)


def _hour_choices(hours: range) -> tuple[list[int], list[float]]:
    cumulative, total = [], 0.0
    for hour in hours:
        total += HOURLY[hour]
        cumulative.append(total)
    return list(hours), cumulative


HOUR_CHOICES = {False: _hour_choices(range(24)), True: _hour_choices(STORE_HOURS)}
STORES = [f"{city}-{n:02d}" for city in ("PAR", "LYS", "MRS", "BOD", "LIL") for n in (1, 2)]
FIRST = ["alice", "bruno", "chloe", "david", "emma", "farid", "gabriel", "hugo", "ines", "jules", "karim", "lea",
         "manon", "nathan", "oceane", "paul", "quentin", "rose", "sarah", "theo", "ugo", "victor", "yasmine", "zoe"]
LAST = ["martin", "bernard", "dubois", "thomas", "robert", "richard", "petit", "durand", "leroy", "moreau",
        "simon", "laurent", "lefebvre", "michel", "garcia", "david", "bertrand", "roux", "vincent", "fournier"]
DOMAINS = ["gmail.com", "yahoo.fr", "orange.fr", "free.fr", "hotmail.com", "outlook.fr", "laposte.net"]
CATEGORIES = {"TV": (299, 1499, 0.72), "AUDIO": (29, 399, 0.65), "CABLE": (5, 30, 0.25), "PHONE": (149, 999, 0.8),
              "HOME": (19, 249, 0.55)}
SUBJECTS = ["Where is my order?", "Delivery is late", "Invoice request", "Product arrived damaged",
            "Is the promotion still on?", "How do I return an item?", "Change my delivery address"]
SOCIAL_TEXTS = ["Love the new TV!", "Best-customer sale is great", "Still waiting for my order {order}",
                "Order {order} arrived broken", "Thanks for the quick delivery", "Is BEST24 valid in store?",
                "The app keeps crashing", "Great service in the Lyon store"]


@dataclass
class Person:
    id: str
    first: str
    last: str
    email: str
    phone: str                      # E.164 digits without +, e.g. 33612345678
    account: str | None
    loyalty: str | None
    handles: dict[str, str] = field(default_factory=dict)
    weight: float = 1.0             # how much they buy: Pareto, so a few customers matter most
    best: bool = False
    orders: list[str] = field(default_factory=list)


class Scenario:
    def __init__(self, customers: int, events: int, seed: int, malformed_rate: float = 0.005):
        if customers < 10 or events < 10:
            raise ValueError("need at least 10 customers and 10 events")
        self.rng = random.Random(seed)
        self.seed, self.customers, self.events, self.malformed_rate = seed, customers, events, malformed_rate
        self.people = [self._person(i) for i in range(customers)]
        ranked = sorted(self.people, key=lambda p: -p.weight)
        for person in ranked[: max(1, customers // 20)]:
            person.best = True      # top 5% by expected spend: the promotion's audience
        # Families: 0.5% of people share their phone with the next person (different people, one number).
        for i in range(0, customers - 1, 200):
            self.people[i + 1].phone = self.people[i].phone
        self.cumulative = []
        total = 0.0
        for person in self.people:
            total += person.weight * (3 if person.best else 1)
            self.cumulative.append(total)
        self.catalogue = self._catalogue()
        self.orders_so_far = 0
        self.order_times: dict[str, datetime] = {}

    # --- people and products --------------------------------------------------------------

    def _person(self, i: int) -> Person:
        rng = self.rng
        first, last = rng.choice(FIRST), rng.choice(LAST)
        email = f"{first}.{last}{i}@{rng.choice(DOMAINS)}"
        # distinct per person, deterministic, and a valid French mobile number (06 1x.. to 06 8x..)
        phone = f"336{rng.choice('1245678')}{i * 7919 % 10_000_000:07d}"
        if rng.random() < 0.03:  # lives overseas: a mobile that is not a valid number for FR when typed as 06...
            phone = f"{rng.choice(OVERSEAS_MOBILES)}{i * 7919 % 1_000_000:06d}"
        person = Person(id=f"P{i:07d}", first=first, last=last, email=email, phone=phone,
                        account=f"A-{i:07d}" if rng.random() < 0.7 else None,
                        loyalty=f"LC-{i:08d}" if rng.random() < 0.5 else None,
                        weight=rng.paretovariate(1.5))
        for platform, share in (("facebook", 0.3), ("instagram", 0.2), ("x", 0.1)):
            if rng.random() < share:
                person.handles[platform] = f"{first}.{last}.{i}" if platform == "facebook" else f"@{first}_{last}{i}"
        return person

    def _catalogue(self) -> list[dict]:
        products = []
        for category, (low, high, cost_share) in CATEGORIES.items():
            for n in range(20):
                price = round(self.rng.uniform(low, high)) - 0.01
                products.append({"sku": f"{category}-{n:03d}", "category": category, "unit_price": price,
                                 "unit_cost": round(price * cost_share, 2)})
        return products

    def _customer(self) -> Person:
        import bisect

        return self.people[bisect.bisect(self.cumulative, self.rng.random() * self.cumulative[-1])]

    # --- messy renderings -----------------------------------------------------------------

    def _messy_email(self, email: str) -> str:
        r = self.rng.random()
        if r < 0.15:
            return email.upper() if r < 0.03 else email.title()
        if r < 0.22:
            return f" {email} "
        return email

    def _messy_phone(self, phone: str) -> str:
        code = phone[:3] if phone.startswith(("590", "596", "262")) else phone[:2]
        national = "0" + phone[len(code):]
        form = self.rng.randrange(5)
        if form == 0:
            return " ".join(national[i:i + 2] for i in range(0, 10, 2))          # 06 12 34 56 78
        if form == 1:
            return national                                                     # 0612345678
        if form == 2:
            rest = phone[len(code):]
            return f"+{code} {rest[0]} " + " ".join(rest[i:i + 2] for i in range(1, 9, 2))  # +33 6 12 34 56 78
        if form == 3:
            return "+" + phone                                                  # +33612345678
        return "00" + phone                                                     # 0033612345678

    def _moment(self, channel: str) -> datetime:
        rng = self.rng
        if rng.random() < SPIKE_SHARE[channel]:
            return TV_AD + timedelta(seconds=min(rng.expovariate(1 / 600), 7200))
        hours, cumulative = HOUR_CHOICES[channel == "store-sales"]
        hour = rng.choices(hours, cum_weights=cumulative)[0]
        return DAY + timedelta(hours=hour, seconds=rng.randrange(3600))

    def _lines(self, best: bool) -> tuple[list[dict], float]:
        lines, subtotal = [], 0.0
        for _ in range(1 + min(int(self.rng.expovariate(1.2)), 4)):
            product = self.rng.choice(self.catalogue)
            quantity = 1 + (self.rng.random() < 0.15)
            lines.append({"sku": product["sku"], "qty": quantity, "unit_price": product["unit_price"],
                          "unit_cost": product["unit_cost"]})
            subtotal += product["unit_price"] * quantity
        return lines, subtotal

    # --- channels: each returns (raw line(s), person id or "" for no person) ----------------

    def web_order(self, n: int) -> tuple[str, str]:
        rng, person = self.rng, self._customer()
        moment = self._moment("web-orders")
        lines, subtotal = self._lines(person.best)
        in_promo = person.best and rng.random() < 0.6
        discount = round(subtotal * 0.15, 2) if in_promo else 0.0
        order_id = f"W-{n + 1:08d}"
        person.orders.append(order_id)
        self.orders_so_far = n + 1
        self.order_times[order_id] = moment
        customer = {"email": self._messy_email(person.email)}
        if person.account:
            customer["account_id"] = person.account
        if rng.random() < 0.5:
            customer["phone"] = self._messy_phone(person.phone)
        record = {
            "order_id": order_id, "created_at": moment.isoformat(timespec="seconds"), "customer": customer,
            "shipping_address": {"postcode": f"{rng.randrange(1000, 95999):05d}", "city": "France", "country": "FR"},
            "currency": "EUR", "lines": [{**l, "unit_price": f"{l['unit_price']:.2f}", "unit_cost": f"{l['unit_cost']:.2f}"} for l in lines],
            "shipping_cost": f"{rng.choice([4.9, 5.9, 7.9, 12.9]):.2f}",
            "discount_code": "BEST24" if in_promo else None, "discount": f"{discount:.2f}",
            "total": f"{subtotal - discount:.2f}",
        }
        return _dumps(record), person.id

    def store_receipt(self, n: int, writer) -> str:
        rng = self.rng
        store = rng.choice(STORES)
        person = self._customer()
        moment = self._moment("store-sales").replace(tzinfo=None)
        lines, subtotal = self._lines(person.best)
        loyalty = person.loyalty if person.loyalty and rng.random() < 0.85 else ""
        phone = email = ""
        r = rng.random()
        if r < 0.15:
            phone = self._messy_phone(person.phone)
        elif r < 0.18:
            phone = PLACEHOLDER_PHONE       # the cashier had to type something
        elif r < 0.20:
            email = PLACEHOLDER_EMAIL
        elif r < 0.26:
            email = self._messy_email(person.email)
        known = loyalty or (phone and phone != PLACEHOLDER_PHONE) or (email and email != PLACEHOLDER_EMAIL)
        receipt = f"R-{n + 1:09d}"
        terminal, payment = f"T{rng.randrange(1, 7)}", rng.choice(["CB", "CB", "CB", "ESP", "CHQ", "CADEAU"])
        sold_at, total = moment.strftime("%Y-%m-%d %H:%M:%S"), f"{subtotal:.2f}".replace(".", ",")
        if store in STORES_WITHOUT_TOTALS:
            total = ""
        for line in lines:  # one row per receipt line, as tills export them
            writer.writerow([store, terminal, receipt, sold_at, loyalty, phone, email, line["sku"], line["qty"],
                             f"{line['unit_price']:.2f}".replace(".", ","), f"{line['unit_cost']:.2f}".replace(".", ","),
                             total, payment, "EUR"])
        return (f"{store}:{receipt}", person.id if known else "")

    def _placed_before(self, person: Person, moment: datetime) -> list[str]:
        """The person's orders placed before this moment: what they can write about."""
        return [o for o in person.orders if self.order_times[o] < moment]

    def ticket(self, n: int) -> tuple[list[str], str]:
        rng, person = self.rng, self._customer()
        via = rng.choices(["phone", "email", "facebook", "chat"], weights=[4, 3, 2, 1])[0]
        if via == "facebook" and "facebook" not in person.handles:
            via = "email"
        requester = {"phone": {"phone": self._messy_phone(person.phone)},
                     "email": {"email": self._messy_email(person.email)},
                     "chat": {"email": self._messy_email(person.email)},
                     "facebook": {"social": {"platform": "facebook", "handle": person.handles.get("facebook")}}}[via]
        moment = self._moment("support-tickets")
        placed = self._placed_before(person, moment)
        order = rng.choice(placed) if placed and rng.random() < 0.6 else None
        subject = rng.choice(SUBJECTS)
        updates = []
        for update, status in enumerate(["new", "open", "solved"][: rng.randint(1, 3)], start=1):
            updates.append(_dumps({"ticket_id": f"T-{n + 1:08d}", "update_id": update,
                                       "updated_at": (moment + timedelta(minutes=40 * (update - 1))).astimezone(timezone.utc).isoformat(timespec="seconds"),
                                       "via": via, "status": status, "subject": subject, "requester": requester,
                                       "order_ref": order, "assignee": f"agent-{rng.randrange(1, 40)}"},
                                      ))
        return updates, person.id

    def social(self, n: int) -> tuple[str, str]:
        rng = self.rng
        person = self._customer()
        platforms = list(person.handles)
        moment = self._moment("social-messages")
        if not platforms or rng.random() < 0.12:     # the brand answering, as the listening tool sees it
            platform = rng.choice(["facebook", "instagram", "x"])
            record = {"id": f"{platform[:2]}_{n + 1}", "platform": platform, "type": "comment",
                      "author": {"handle": BRAND_HANDLE}, "text": "Thanks, we sent you a private message",
                      "created_time": int(moment.timestamp())}
            return _dumps(record), ""
        platform = rng.choice(platforms)
        placed = self._placed_before(person, moment)
        templates = SOCIAL_TEXTS if placed else [t for t in SOCIAL_TEXTS if "{order}" not in t]
        order = rng.choice(placed) if placed else ""
        if rng.random() < 0.05 and self.orders_so_far:   # a relative's order: not this person's, maybe not placed yet
            order = f"W-{rng.randrange(1, self.orders_so_far + 1):08d}"
        text = rng.choice(templates).format(order=order)
        record = {"id": f"{platform[:2]}_{n + 1}", "platform": platform,
                  "type": rng.choices(["post", "comment", "dm"], weights=[5, 3, 2])[0],
                  "author": {"handle": person.handles[platform], "name": f"{person.first.title()} {person.last[0].upper()}."},
                  "text": text, "created_time": int(moment.timestamp())}
        return _dumps(record), person.id

    def session(self, n: int) -> tuple[str, str]:
        rng = self.rng
        person = self._customer()
        moment = self._moment("app-sessions")
        signed_in = person.account is not None and rng.random() < 0.4
        spike = abs((moment - TV_AD).total_seconds()) < 7200
        record = {"session_id": f"S-{n + 1:09d}", "started_at_ms": int(moment.timestamp() * 1000),
                  "user": {"account_id": person.account} if signed_in else None,
                  "device": {"os": rng.choice(["ios", "android"]), "app_version": rng.choice(["5.2.1", "5.2.0", "5.1.9"])},
                  "screens": rng.randint(1, 15), "utm_campaign": "tv-best24" if spike and rng.random() < 0.7 else None,
                  "added_to_cart": rng.random() < 0.2}
        return _dumps(record), person.id if signed_in else ""

    def return_request(self, n: int) -> tuple[dict, str]:
        """A return of one of the person's orders, from the returns portal (a JSON document export)."""
        rng = self.rng
        person = self._customer()
        for _ in range(20):
            if person.orders:
                break
            person = self._customer()
        customer = {"email": self._messy_email(person.email)}
        if rng.random() < 0.6:
            customer["phone"] = self._messy_phone(person.phone)
        moment = self._moment("returns")
        placed = self._placed_before(person, moment)
        return {"return_id": f"RT-{n + 1:08d}", "requested_at": moment.isoformat(timespec="seconds"),
                "order_ref": rng.choice(placed) if placed else None, "customer": customer,
                "reason": rng.choice(RETURN_REASONS), "refund": f"{rng.randrange(500, 50_000) / 100:.2f}",
                "currency": "EUR"}, person.id

    # --- malformed records ----------------------------------------------------------------

    def _malformed_json(self, line: str) -> str:
        if self.rng.randrange(3) == 0:
            return line[: len(line) // 2]                             # truncated write
        return self._malformed_record(line)

    def _malformed_record(self, line: str) -> str:
        """Valid JSON, wrong record: no date, or no id."""
        record = json.loads(line)
        if self.rng.randrange(2) == 0:
            for key in ("created_at", "updated_at", "created_time", "started_at_ms", "requested_at"):
                if key in record:
                    record[key] = "not-a-date"
        else:
            for key in ("order_id", "ticket_id", "id", "session_id", "return_id"):
                record.pop(key, None)                                  # no id
        return _dumps(record)

    # --- writing --------------------------------------------------------------------------

    def write_channels(self, names: list[str], out: Path) -> dict:
        """Write these channels (in this order) and their part of the ground truth."""
        per_channel = {name: int(self.events * share) for name, share in CHANNEL_SHARE.items()}
        per_channel["app-sessions"] += self.events - sum(per_channel.values())
        counts = {}
        for name in names:
            self.rng = random.Random(f"{self.seed}/{name}")  # per channel: the split across processes changes nothing
            with (out / f"ground_truth.{name}.part").open("w", newline="") as truth_file:
                counts[name] = self._write_channel(name, per_channel[name], out, csv.writer(truth_file))
        return counts

    def write_reference_files(self, out: Path) -> None:
        with (out / "people.csv").open("w", newline="") as people:
            writer = csv.writer(people)
            writer.writerow(["person_id", "best_customer", "has_account", "has_loyalty_card", "social_platforms"])
            for p in self.people:
                writer.writerow([p.id, int(p.best), int(p.account is not None), int(p.loyalty is not None), "|".join(p.handles)])
        with (out / "products.csv").open("w", newline="") as products:
            writer = csv.DictWriter(products, fieldnames=["sku", "category", "unit_price", "unit_cost"])
            writer.writeheader()
            writer.writerows(self.catalogue)
        (out / "campaigns.json").write_text(json.dumps([{
            "campaign_id": "tv-best24", "name": "24-hour best-customer promotion, TV ad at 20:45",
            "starts_at": DAY.isoformat(), "ends_at": (DAY + timedelta(days=1)).isoformat(),
            "audience_segment": "best_customers", "channels": ["tv", "web", "app", "store"], "discount_code": "BEST24",
            "media_cost": "185000.00", "currency": "EUR", "tv_ad_at": TV_AD.isoformat(),
            "expected_extra_visitors": int(self.events * 0.05)}], indent=1))

    def _write_channel(self, name: str, count: int, out: Path, truth) -> dict:
        channel = CHANNELS[name]
        records = malformed = 0
        if name == "returns":  # one JSON document, written as it goes: {"exported_at": ..., "returns": [...]}
            path = out / f"{name}.json"
            with path.open("w") as file:
                file.write(f'{{"exported_at": "{(DAY + timedelta(days=1)).isoformat()}", "returns": [\n')
                for n in range(count):
                    record, person = self.return_request(n)
                    line = _dumps(record)
                    if self.rng.random() < self.malformed_rate:
                        line = self._malformed_record(line)   # a bad record, but the document stays valid JSON
                        malformed += 1
                    else:
                        truth.writerow([channel, record["return_id"], person])
                        records += 1
                    file.write(line + (",\n" if n < count - 1 else "\n"))
                    if n % 1000 == 999:
                        _count(1000)
                file.write("]}\n")
                _count(count % 1000)
            return {"file": path.name, "records": records + malformed, "valid": records, "malformed": malformed}
        if name == "store-sales":
            path = out / f"{name}.csv"
            with path.open("w", newline="") as file:
                writer = csv.writer(file, delimiter=";", lineterminator="\n")
                writer.writerow(["store_id", "terminal_id", "receipt_id", "sold_at", "loyalty_card", "customer_phone",
                                 "customer_email", "sku", "qty", "unit_price", "unit_cost", "receipt_total", "payment", "currency"])
                for n in range(count):
                    if self.rng.random() < self.malformed_rate:
                        file.write(f"{self.rng.choice(STORES)};T1;X-{n};2026-11-20\n")   # a row cut short
                        malformed += 1
                        continue
                    source_id, person = self.store_receipt(n, writer)
                    truth.writerow([channel, source_id, person])
                    records += 1
                    if records % 1000 == 0:
                        _count(1000)
            _count(records % 1000 + malformed)
            return {"file": path.name, "records": records + malformed, "valid": records, "malformed": malformed}
        path = out / f"{name}.jsonl"
        with path.open("w") as file:
            buffer = io.StringIO()
            n = counted = 0
            while records + malformed < count:
                n += 1
                if name == "web-orders":
                    line, person = self.web_order(n - 1)
                    lines, source_ids = [line], [f"W-{n:08d}"]
                elif name == "support-tickets":  # a ticket is several updates: stop at the budget
                    lines, person = self.ticket(n - 1)
                    lines = lines[: count - records - malformed]
                    source_ids = [f"T-{n:08d}:{u}" for u in range(1, len(lines) + 1)]
                elif name == "social-messages":
                    line, person = self.social(n - 1)
                    platform = line[line.index('"platform":"') + 12:].split('"', 1)[0]
                    lines, source_ids = [line], [f"{platform}:{platform[:2]}_{n}"]
                else:
                    line, person = self.session(n - 1)
                    lines, source_ids = [line], [f"S-{n:09d}"]
                for line, source_id in zip(lines, source_ids):
                    if self.rng.random() < self.malformed_rate:
                        buffer.write(self._malformed_json(line) + "\n")
                        malformed += 1
                        continue
                    buffer.write(line + "\n")
                    truth.writerow([channel, source_id, person])
                    records += 1
                if buffer.tell() > 1 << 20:
                    file.write(buffer.getvalue())
                    buffer = io.StringIO()
                    _count(records + malformed - counted)
                    counted = records + malformed
            file.write(buffer.getvalue())
            _count(records + malformed - counted)
        return {"file": path.name, "records": records + malformed, "valid": records, "malformed": malformed}


# Two groups, one process each (the machines have 2 cores). Tickets, social messages and returns name
# orders, so they follow the web orders in the same process.
PROCESS_GROUPS = [["web-orders", "support-tickets", "social-messages", "returns"], ["store-sales", "app-sessions"]]


_written = None   # records written so far, shared by the processes writing (a multiprocessing.Value)


def _share_count(counter) -> None:
    global _written
    _written = counter


def _count(records: int) -> None:
    if _written is not None:
        with _written.get_lock():
            _written.value += records


def _write_group(customers: int, events: int, seed: int, malformed_rate: float, names: list[str], out: str) -> dict:
    return Scenario(customers, events, seed, malformed_rate).write_channels(names, Path(out))


def generate(out: Path, customers: int = 10_000, events: int = 100_000, seed: int = 24,
             malformed_rate: float = 0.005, processes: int = 2) -> dict:
    """Write the scenario into out; returns the manifest (records, valid and malformed per channel).
    The bytes written do not depend on processes."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, wait

    from infra.progress import progress_bar

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    scenario = Scenario(customers, events, seed, malformed_rate)  # validates arguments before forking
    counts: dict[str, dict] = {}
    written = multiprocessing.Value("q", 0)
    bar = progress_bar(events, "generating", unit="events")
    try:
        if processes > 1:
            with ProcessPoolExecutor(min(processes, len(PROCESS_GROUPS)), initializer=_share_count,
                                     initargs=(written,)) as pool:
                futures = [pool.submit(_write_group, customers, events, seed, malformed_rate, g, str(out))
                           for g in PROCESS_GROUPS]
                while not all(future.done() for future in futures):
                    wait(futures, timeout=0.5)
                    bar.update(written.value - bar.n)
                for future in futures:
                    counts.update(future.result())
        else:
            _share_count(written)
            for group in PROCESS_GROUPS:
                counts.update(scenario.write_channels(group, out))
        bar.update(written.value - bar.n)
    finally:
        bar.close()
        _share_count(None)
    with (out / "ground_truth.csv").open("w") as truth:
        truth.write("channel,source_id,person_id\n")
        for name in CHANNEL_SHARE:
            part = out / f"ground_truth.{name}.part"
            truth.write(part.read_text())
            part.unlink()
    scenario.write_reference_files(out)
    manifest = {"customers": customers, "events": events, "seed": seed,
                "channels": {name: counts[name] for name in CHANNEL_SHARE}}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest
