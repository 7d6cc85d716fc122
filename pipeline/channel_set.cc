// pipeline/channel_set.cc — see channel_set.h.
#include "pipeline/channel_set.h"

#include <sys/eventfd.h>
#include <sys/resource.h>
#include <unistd.h>

namespace ferry::pipeline {

SetCounters SetCounters::after(const SetCounters& earlier) const {
  SetCounters a = *this;
  a.bytes_from_qemu += earlier.bytes_from_qemu;
  a.bytes_to_qemu += earlier.bytes_to_qemu;
  a.link_tx_bytes += earlier.link_tx_bytes;
  a.link_rx_bytes += earlier.link_rx_bytes;
  a.pages_normal += earlier.pages_normal;
  a.pages_zero += earlier.pages_zero;
  a.page_bytes_in += earlier.page_bytes_in;
  a.page_wire_bytes += earlier.page_wire_bytes;
  a.pages_xbzrle += earlier.pages_xbzrle;
  a.pages_compressed += earlier.pages_compressed;
  for (size_t i = 0; i < encoders::kFormCount; ++i) {
    a.form_pages[i] += earlier.form_pages[i];
    a.form_bytes[i] += earlier.form_bytes[i];
  }
  a.encode_ns += earlier.encode_ns;
  a.link_retransmits += earlier.link_retransmits;
  a.link_resumes += earlier.link_resumes;
  return a;
}

struct ChannelSet::Channel {
  uint16_t index = 0;
  QemuEnd qemu;
  bool own_fds = false;
  std::unique_ptr<dataplane::Transport> link;
  const char* link_kind = "";
  json::Value link_stats;  // what the transport measured, kept when the channel ends
  std::unique_ptr<StreamCodec> codec;
  PageStreamEncoder* encoder = nullptr;  // codec, when this side encodes pages
  // The QEMU migration stream (counted by class) and the return path, whichever way each
  // flows on this side. An encoder counts the stream from its own parse; without one the
  // tap parses it.
  StreamStats tap{false};
  StreamStats return_path{true};
  const StreamStats& stream() const { return encoder ? encoder->stream_stats() : tap; }
  std::unique_ptr<ChannelPump> pump;
  std::thread thread;
  std::atomic<bool> finished{false};
  bool reaped = false;
  Status result;

  void close_fds() {
    if (!own_fds) return;
    if (qemu.read_fd >= 0) ::close(qemu.read_fd);
    if (qemu.write_fd >= 0 && qemu.write_fd != qemu.read_fd) ::close(qemu.write_fd);
    qemu = {};
  }
};

namespace {

void signal_fd(int fd) {
  uint64_t one = 1;
  ssize_t r = ::write(fd, &one, sizeof one);
  (void)r;  // the counter cannot overflow with a handful of channels
}

}  // namespace

ChannelSet::ChannelSet(PumpRole role)
    : role_(role),
      abort_fd_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)),
      wake_fd_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)),
      // The source answers a request within milliseconds or never (it had sent the page
      // before): a short memory keeps the table, scanned for every page, small.
      requests_(4096, role == PumpRole::kSender ? std::chrono::milliseconds(2000)
                                                : PageRequestTracker::kForgetAfter) {}

ChannelSet::~ChannelSet() {
  abort_all();
  ::close(abort_fd_);
  ::close(wake_fd_);
}

void ChannelSet::start(uint16_t index, QemuEnd qemu, bool own_fds,
                       std::unique_ptr<dataplane::Transport> link,
                       std::unique_ptr<PageStreamEncoder> encoder) {
  PageStreamEncoder* typed = encoder.get();
  start_channel(index, qemu, own_fds, std::move(link), std::move(encoder), typed);
}

void ChannelSet::start(uint16_t index, QemuEnd qemu, bool own_fds,
                       std::unique_ptr<dataplane::Transport> link,
                       std::unique_ptr<PageStreamDecoder> decoder) {
  if (decoder) decoder->set_postcopy_bases(&postcopy_bases_);
  start_channel(index, qemu, own_fds, std::move(link), std::move(decoder), nullptr);
}

void ChannelSet::start_channel(uint16_t index, QemuEnd qemu, bool own_fds,
                               std::unique_ptr<dataplane::Transport> link,
                               std::unique_ptr<StreamCodec> codec, PageStreamEncoder* encoder) {
  auto ch = std::make_unique<Channel>();
  ch->index = index;
  ch->qemu = qemu;
  ch->own_fds = own_fds;
  ch->link = std::move(link);
  ch->codec = std::move(codec);
  ch->encoder = encoder;
  const bool sender = role_ == PumpRole::kSender;
  // The stream is parsed once: by the encoder when there is one, else by the tap.
  StreamTap* stream_tap = ch->encoder ? nullptr : &ch->tap;
  PumpOptions opt;
  opt.tap_from_qemu = sender ? stream_tap : &ch->return_path;
  opt.tap_to_qemu = sender ? &ch->return_path : stream_tap;
  if (sender) {
    // The page requests this channel's return path carries to the source QEMU.
    opt.page_requests = &ch->return_path.page_requests;
    opt.postcopy_requested = &postcopy_requested_;
    opt.postcopy_pending = postcopy_pending_;
    opt.postcopy_hold = postcopy_hold_;
    opt.postcopy_pace = postcopy_pace_;
    opt.open_requests = &requests_;
    if (ch->codec) ch->return_path.promote_into(ch->codec.get());
  }
  if (ch->encoder) {
    ch->encoder->track_requests(&requests_);
    if (sender && postcopy_hold_ > 0) {
      if (!preempt_route_) preempt_route_ = std::make_unique<PreemptRoute>();
      ch->encoder->set_preempt_route(preempt_route_.get());
      ch->encoder->set_postcopy_bases(&postcopy_bases_);
    }
  } else {
    ch->tap.track_requests(&requests_);
  }
  ch->return_path.track_requests(&requests_);
  opt.abort_fd = abort_fd_;
  opt.poll_mode = poll_mode_;
  opt.codec = ch->codec.get();
  ch->link_kind = ch->link->kind();
  ch->pump = std::make_unique<ChannelPump>(role_, ch->qemu, *ch->link, opt);
  Channel* c = ch.get();
  int wake = wake_fd_;
  std::lock_guard lk(mu_);
  if (channels_.empty()) first_link_up_ = std::chrono::steady_clock::now();
  ch->thread = std::thread([c, wake] {
    c->result = c->pump->run();
    // Close QEMU's end right away: on failure QEMU must see it now, not at process exit.
    c->close_fds();
    c->link_stats = c->link->link_stats();
    c->pump->release_buffers();  // into the link's pools, which go with it
    c->link.reset();
    c->finished.store(true, std::memory_order_release);
    signal_fd(wake);
  });
  channels_.push_back(std::move(ch));
}

void ChannelSet::reap() {
  std::lock_guard joining(join_mu_);
  std::lock_guard lk(mu_);
  reap_locked();
}

bool ChannelSet::main_done() const {
  std::lock_guard lk(mu_);
  return main_done_;
}

bool ChannelSet::failed() const {
  std::lock_guard lk(mu_);
  return !first_error_.empty();
}

std::string ChannelSet::first_error() const {
  std::lock_guard lk(mu_);
  return first_error_;
}

size_t ChannelSet::size() const {
  std::lock_guard lk(mu_);
  return channels_.size();
}

bool ChannelSet::all_done() const {
  std::lock_guard lk(mu_);
  if (channels_.empty()) return false;
  for (const auto& c : channels_) {
    if (!c->reaped) return false;
  }
  return true;
}

bool ChannelSet::postcopy_started() const {
  std::lock_guard lk(mu_);
  for (const auto& c : channels_) {
    if (c->stream().postcopy.load(std::memory_order_relaxed)) return true;
  }
  return false;
}

void ChannelSet::reap_locked() {
  uint64_t v;
  ssize_t r = ::read(wake_fd_, &v, sizeof v);
  (void)r;
  for (auto& c : channels_) {
    if (c->reaped || !c->finished.load(std::memory_order_acquire)) continue;
    if (c->thread.joinable()) c->thread.join();
    c->reaped = true;
    if (!c->result.is_ok() && first_error_.empty()) {
      first_error_ = (c->index == 0 ? std::string("main channel: ")
                                    : "channel " + std::to_string(c->index) + ": ") +
                     c->result.message();
    }
    // Every byte crossed, but the stream itself stopped short: the migration did not
    // complete, whatever the link said.
    if (c->result.is_ok() && c->stream().ended_early() && first_error_.empty()) {
      first_error_ = std::string(
                         "main channel: QEMU's stream ended before its end marker "
                         "(QEMU_VM_EOF): the migration did not complete (") +
                     (role_ == PumpRole::kSender ? "the source QEMU stopped sending mid-stream"
                                                 : "the source side stopped mid-stream") +
                     ")";
    }
    if (c->index == 0) main_done_ = true;
  }
}

void ChannelSet::abort_all() {
  signal_fd(abort_fd_);
  join_all();
}

void ChannelSet::join_all() {
  // Each thread is joined outside mu_: the read-outs (a signal's check of post-copy, progress,
  // metrics) must not wait for a channel that takes long to end. join_mu_ keeps two joiners
  // (and reap) off one thread.
  std::lock_guard joining(join_mu_);
  for (size_t i = 0;; ++i) {
    std::thread* t = nullptr;
    {
      std::lock_guard lk(mu_);
      if (i >= channels_.size()) break;
      t = &channels_[i]->thread;
    }
    if (t->joinable()) t->join();
  }
  std::lock_guard lk(mu_);
  reap_locked();
}

void ChannelSet::set_effort(int effort) {
  std::lock_guard lk(mu_);
  for (auto& c : channels_) {
    if (c->encoder) c->encoder->set_effort(effort);
  }
}

SetCounters ChannelSet::counters() const {
  std::lock_guard lk(mu_);
  SetCounters t;
  t.sender = role_ == PumpRole::kSender;
  t.seconds = seconds();
  t.channels = channels_.size();
  for (const auto& c : channels_) {
    const auto& k = c->pump->counters();
    t.bytes_from_qemu += k.bytes_from_qemu.load(std::memory_order_relaxed);
    t.bytes_to_qemu += k.bytes_to_qemu.load(std::memory_order_relaxed);
    t.link_tx_bytes += k.link_tx_bytes.load(std::memory_order_relaxed);
    t.link_rx_bytes += k.link_rx_bytes.load(std::memory_order_relaxed);
    t.link_backlog_bytes += k.link_backlog_bytes.load(std::memory_order_relaxed);
    t.pages_normal += c->stream().normal.load(std::memory_order_relaxed);
    t.pages_zero += c->stream().zero.load(std::memory_order_relaxed);
    t.pages_xbzrle += c->stream().xbzrle.load(std::memory_order_relaxed);
    t.pages_compressed += c->stream().compressed.load(std::memory_order_relaxed);
    t.link_retransmits += k.link_retransmits.load(std::memory_order_relaxed);
    t.link_resumes += k.link_resumes.load(std::memory_order_relaxed);
    if (const PageStreamEncoder* enc = c->encoder) {
      t.page_bytes_in += enc->counters().page_bytes_in.load(std::memory_order_relaxed);
      t.page_wire_bytes += enc->counters().wire_bytes.load(std::memory_order_relaxed);
      t.encode_ns += enc->counters().encode_ns.load(std::memory_order_relaxed);
      for (size_t f = 0; f < encoders::kFormCount; ++f) {
        t.form_pages[f] += enc->counters().pages[f].load(std::memory_order_relaxed);
        t.form_bytes[f] += enc->counters().bytes[f].load(std::memory_order_relaxed);
      }
      if (c->index == 0) t.effort = enc->counters().effort.load(std::memory_order_relaxed);
    }
  }
  return t;
}

double ChannelSet::seconds() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
}

// Before the first link is up there is no setup time to tell (null): nothing was sent.
json::Value ChannelSet::link_setup_s() const {
  if (channels_.empty()) return json::Value();
  return json::rounded(std::chrono::duration<double>(first_link_up_ - t0_).count(), 6);
}

namespace {

json::Value page_classes(const uint64_t p[4]) {
  return json::Value::object(
      {{"zero", p[0]}, {"normal", p[1]}, {"xbzrle", p[2]}, {"compressed", p[3]}});
}

}  // namespace

json::Value ChannelSet::stats_json(const std::string& outcome, const std::string& error) const {
  using json::Value;
  std::lock_guard lk(mu_);
  uint64_t t[6] = {}, pages[4] = {}, rp = 0, packets = 0;
  Value per = Value::array();
  for (const auto& c : channels_) {
    const auto& k = c->pump->counters();
    const StreamStats& s = c->stream();
    uint64_t v[6] = {k.bytes_from_qemu.load(), k.bytes_to_qemu.load(), k.link_tx_bytes.load(),
                     k.link_rx_bytes.load(),   k.frames_tx.load(),     k.frames_rx.load()};
    uint64_t p[4] = {s.zero.load(), s.normal.load(), s.xbzrle.load(), s.compressed.load()};
    for (int i = 0; i < 6; ++i) t[i] += v[i];
    for (int i = 0; i < 4; ++i) pages[i] += p[i];
    rp += c->return_path.rp_messages.load();
    packets += s.multifd_packets.load();
    Value ch = Value::object({{"index", Value(unsigned{c->index})},
                              {"role", s.role()},
                              {"bytes_from_qemu", v[0]},
                              {"bytes_to_qemu", v[1]},
                              {"link_tx_bytes", v[2]},
                              {"link_rx_bytes", v[3]},
                              {"pages", page_classes(p)},
                              {"note", s.note()},
                              {"transport", c->link_kind}});
    // Measured by the transport, once the channel ended (the data path owns it until then).
    if (c->finished.load(std::memory_order_acquire) && !c->link_stats.is_null()) {
      ch.set("link", c->link_stats);
    }
    per.push_back(std::move(ch));
  }
  Value doc = Value::object({{"side", role_ == PumpRole::kSender ? "send" : "recv"},
                             {"outcome", outcome},
                             {"duration_s", json::rounded(seconds(), 6)},
                             {"link_setup_s", link_setup_s()},
                             {"channels", channels_.size()},
                             {"bytes_from_qemu", t[0]},
                             {"bytes_to_qemu", t[1]},
                             {"link_tx_bytes", t[2]},
                             {"link_rx_bytes", t[3]},
                             {"bytes_on_link", t[2] + t[3]},
                             {"frames_tx", t[4]},
                             {"frames_rx", t[5]},
                             {"pages", page_classes(pages)},
                             {"multifd_packets", packets},
                             {"return_path_messages", rp}});
  // Page encoding (ferry send --codec): records by form over every channel.
  uint64_t form_pages[encoders::kFormCount] = {}, form_bytes[encoders::kFormCount] = {};
  uint64_t page_bytes_in = 0, wire_bytes = 0;
  bool encoding = false;
  int effort = -1;
  uint64_t effort_changes = 0;
  uint64_t effort_pages[encoders::kMaxEffort + 1] = {};
  Value shard_pages = Value::array();
  uint64_t cache_hits = 0, cache_misses = 0, cache_evictions = 0, cache_declined = 0;
  uint64_t cache_capacity = 0, cache_peak = 0, cache_resizes = 0;
  size_t cache_budget = 0;
  const char* cache_policy = "";
  uint64_t held_promoted = 0, held_peak = 0, held_followed = 0, paced = 0;
  uint64_t postcopy_pages = 0, postcopy_record_bytes = 0, postcopy_against_base = 0;
  int64_t discard_seen_ns = 0, package_framed_ns = 0, package_sent_ns = 0;
  uint64_t package_ahead = 0;
  for (const auto& c : channels_) {
    const PumpCounters& pk = c->pump->counters();
    paced = std::max<uint64_t>(paced, pk.postcopy_pace_bytes_per_s.load());
    if (pk.package_framed_ns.load() != 0) {  // the main channel's
      package_framed_ns = pk.package_framed_ns.load();
      package_sent_ns = pk.package_sent_ns.load();
      package_ahead = pk.package_ahead_bytes.load();
    }
    const PageStreamEncoder* enc = c->encoder;
    if (!enc) continue;
    if (enc->counters().discard_seen_ns.load() != 0) {
      discard_seen_ns = enc->counters().discard_seen_ns.load();
    }
    encoding = true;
    held_promoted += enc->promoted_pages();
    held_followed += enc->held_pages_followed();
    held_peak = std::max<uint64_t>(held_peak, enc->held_peak_bytes());
    const auto& k = enc->counters();
    postcopy_pages += k.postcopy_pages.load();
    postcopy_record_bytes += k.postcopy_record_bytes.load();
    postcopy_against_base += k.postcopy_against_base.load();
    for (size_t f = 0; f < encoders::kFormCount; ++f) {
      form_pages[f] += k.pages[f].load();
      form_bytes[f] += k.bytes[f].load();
    }
    page_bytes_in += k.page_bytes_in.load();
    wire_bytes += k.wire_bytes.load();
    effort_changes += k.effort_changes.load();
    for (int e = 0; e <= encoders::kMaxEffort; ++e) effort_pages[e] += k.effort_pages[e].load();
    cache_hits += k.cache_hits.load();
    cache_misses += k.cache_misses.load();
    cache_evictions += k.cache_evictions.load();
    cache_declined += k.cache_declined.load();
    cache_capacity += k.cache_capacity_bytes.load();
    cache_peak += k.cache_peak_bytes.load();
    cache_resizes += k.cache_resizes.load();
    if (c->index == 0) {
      cache_budget = enc->options().cache_bytes;
      cache_policy = encoders::cache_policy_name(enc->options().cache_policy);
      effort = k.effort.load();
      const unsigned shards = k.shards.load();
      for (unsigned i = 0; i < shards && i < kMaxShards; ++i) {
        shard_pages.push_back(k.shard_pages[i].load());
      }
    }
  }
  if (encoding) {
    Value enc = Value::object({{"page_bytes_in", page_bytes_in}});
    uint64_t out = 0;
    for (size_t f = 0; f < encoders::kFormCount; ++f) {
      enc.set(encoders::form_name(static_cast<encoders::Form>(f)),
              Value::object({{"pages", form_pages[f]}, {"bytes", form_bytes[f]}}));
      out += form_bytes[f];
    }
    Value per_effort = Value::array();
    for (int e = 0; e <= encoders::kMaxEffort; ++e) per_effort.push_back(effort_pages[e]);
    enc.set("record_bytes", out);
    enc.set("wire_bytes", wire_bytes);
    enc.set("ratio", json::rounded(page_bytes_in ? double(wire_bytes) / page_bytes_in : 0.0, 4));
    enc.set("final_effort", effort);
    enc.set("effort_changes", effort_changes);
    enc.set("pages_per_effort", std::move(per_effort));
    enc.set("encode_threads", shard_pages.size());
    enc.set("pages_per_shard", std::move(shard_pages));
    doc.set("encoding", std::move(enc));
    // Lookups of non-zero pages: a hit can go as same or delta, a miss goes whole; declined
    // misses were not admitted (aged-clock keeping a working set larger than the cache). The
    // budget is --cache-mib (host-bounded); capacity what the working set sized it to, peak
    // the most page copies it held (the memory it used on each end). Not inside "encoding",
    // whose objects are the forms.
    const uint64_t lookups = cache_hits + cache_misses;
    doc.set(
        "page_cache",
        Value::object({{"policy", cache_policy},
                       {"budget_bytes", cache_budget},
                       {"capacity_bytes", cache_capacity},
                       {"peak_bytes", cache_peak},
                       {"resizes", cache_resizes},
                       {"hits", cache_hits},
                       {"misses", cache_misses},
                       {"evictions", cache_evictions},
                       {"declined", cache_declined},
                       {"hit_rate",
                        json::rounded(lookups ? double(cache_hits) / double(lookups) : 0.0, 4)}}));
  }
  {
    // Receiver: from a page request passing through on the return path until its pages were
    // handed to the destination QEMU (ferry's part of a post-copy fault). Sender: from the
    // request written to the source QEMU until QEMU wrote the pages (the source's part);
    // "unanswered" there counts the pages QEMU had sent before (page_requests.h).
    const PageRequestTracker::Summary r = requests_.summary();
    Value pc = Value::object(
        {{"measured", Value(role_ == PumpRole::kReceiver ? "ferry recv to the destination"
                                                         : "the source QEMU")},
         {"page_requests", r.requests},
         {"answered", r.answered},
         {"answered_on_preempt", r.by_preempt},
         {"unanswered", r.open + r.dropped},
         {"request_wait_ms", Value::object({{"p50", json::rounded(r.p50_ms, 3)},
                                            {"p99", json::rounded(r.p99_ms, 3)},
                                            {"max", json::rounded(r.max_ms, 3)},
                                            {"mean", json::rounded(r.mean_ms, 3)}})}});
    // Each request of the first PageRequestTracker::kTimelineMax: [when (ms on the host's
    // monotonic clock), its wait in ms (null: not answered), 1 if answered on the preempt
    // channel, the page's offset in its block], so that a run's page faults can be lined up
    // with the guest's ticks.
    Value timeline = Value::array();
    for (const PageRequestTracker::TimelineEntry& e : requests_.timeline()) {
      const double at_ms =
          std::chrono::duration<double, std::milli>(e.at.time_since_epoch()).count();
      timeline.push_back(Value::array({json::rounded(at_ms, 2),
                                       e.wait_ms < 0 ? Value() : Value(json::rounded(e.wait_ms, 3)),
                                       Value(e.preempt ? 1 : 0), Value(e.offset)}));
    }
    pc.set("requests_monotonic_ms", std::move(timeline));
    if (role_ == PumpRole::kSender) {
      // The held stream (PumpOptions::postcopy_hold): its largest size, and the pages asked
      // for that went out ahead of it.
      pc.set("held_peak_bytes", held_peak);
      pc.set("held_pages_promoted", held_promoted);
      // Of them, those that went on the preempt link (preempt_route.h).
      pc.set("held_pages_on_preempt", preempt_route_ ? preempt_route_->routed() : 0);
      // Held pages that went ahead of the rest because they followed one asked for.
      pc.set("held_pages_followed", held_followed);
      // Pages on the preempt link (QEMU's and routed ones) encoded (POSTCOPY_PAGE), their
      // records' bytes, and those that went as same or delta against the frozen caches.
      pc.set("preempt_pages_encoded", postcopy_pages);
      pc.set("preempt_record_bytes", postcopy_record_bytes);
      pc.set("preempt_pages_against_base", postcopy_against_base);
      // The main link's pacing rate in post-copy (PumpOptions::postcopy_pace), 0 = not paced.
      pc.set("paced_bytes_per_s", paced);
      // The switch on the host's monotonic clock (ms; null: not seen): QEMU's first discard
      // came by, its package was framed, and all of it had left ferry (on tcp: was in the
      // kernel); and the bytes ferry still had for the link when the package was framed, the
      // package's included.
      const auto ms = [](int64_t ns) { return ns ? Value(json::rounded(ns / 1e6, 2)) : Value(); };
      pc.set("switch_monotonic_ms", Value::object({{"discard_seen", ms(discard_seen_ns)},
                                                   {"package_framed", ms(package_framed_ns)},
                                                   {"package_sent", ms(package_sent_ns)}}));
      pc.set("package_ahead_bytes", package_ahead);
    }
    doc.set("postcopy", std::move(pc));
  }
  // CPU seconds of this whole process (all channel threads, encoding included).
  rusage ru{};
  ::getrusage(RUSAGE_SELF, &ru);
  doc.set("cpu_user_s", json::rounded(ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6, 3));
  doc.set("cpu_sys_s", json::rounded(ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6, 3));
  doc.set("error", error.empty() ? Value() : Value(error));
  doc.set("per_channel", std::move(per));
  return doc;
}

}  // namespace ferry::pipeline
