// dataplane/rdma/rdma_transport.cc — control path of the `rdma` transport: provider choice,
// passive endpoint and connection requests, connect with a deadline, registration of the frame
// pools, and the one-sentence errors of each step.
#include "dataplane/rdma/rdma_transport.h"

#include <rdma/fi_cm.h>
#include <rdma/fi_errno.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <set>
#include <thread>

#include "common/endian.h"
#include "common/log.h"
#include "dataplane/net.h"
#include "dataplane/rdma/internal/rdma_link.h"

namespace ferry::dataplane::rdma {
namespace {

constexpr uint32_t kFabricVersion = FI_VERSION(1, 14);
// How long an accepted connection request may take to complete (the client already waits).
constexpr int kAcceptCompleteMs = 5000;
// The memory-registration modes the verbs provider needs, asked of every provider so that the
// code tested here on the tcp provider registers and describes memory as on hardware.
constexpr int kMrModes = FI_MR_LOCAL | FI_MR_VIRT_ADDR | FI_MR_ALLOCATED | FI_MR_PROV_KEY;

std::string fi_reason(int err) { return fi_strerror(err < 0 ? -err : err); }

// "tcp, sockets, ..." — providers offering reliable connected endpoints on this host.
std::string msg_providers() {
  fi_info* hints = fi_allocinfo();
  hints->ep_attr->type = FI_EP_MSG;
  fi_info* list = nullptr;
  std::set<std::string> names;
  if (fi_getinfo(kFabricVersion, nullptr, nullptr, 0, hints, &list) == 0) {
    for (fi_info* i = list; i; i = i->next) names.insert(i->fabric_attr->prov_name);
    fi_freeinfo(list);
  }
  fi_freeinfo(hints);
  std::string s;
  for (const auto& n : names) s += (s.empty() ? "" : ", ") + n;
  return s.empty() ? "none" : s;
}

struct HostPort {
  std::string host, port;
};

Result<HostPort> parse_address(const std::string& address) {
  auto ep = parse_endpoint("tcp:" + address);
  if (!ep) {
    return Status(ErrorCode::kInvalidArgument, "rdma address '" + address + "' is not HOST:PORT (" +
                                                   ep.status().message() + ")");
  }
  return HostPort{ep->host, ep->port};
}

// fi_getinfo for one provider; source = listening side.
int query(const std::string& provider, const HostPort& hp, bool source, fi_info** out) {
  fi_info* hints = fi_allocinfo();
  hints->ep_attr->type = FI_EP_MSG;
  hints->caps = FI_MSG;
  hints->mode = FI_CONTEXT | FI_CONTEXT2;
  hints->domain_attr->mr_mode = kMrModes;
  hints->domain_attr->threading = FI_THREAD_DOMAIN;  // one owner thread per link
  hints->fabric_attr->prov_name = strdup(provider.c_str());
  const char* node =
      hp.host.empty() || (source && hp.host == "0.0.0.0") ? nullptr : hp.host.c_str();
  int rc = fi_getinfo(kFabricVersion, node, hp.port.c_str(), source ? FI_SOURCE : 0, hints, out);
  fi_freeinfo(hints);
  if (rc == 0 && (*out)->domain_attr->cq_data_size < 4) {
    fi_freeinfo(*out);
    *out = nullptr;
    return -FI_ENODATA;  // no room for the credits in the completion data
  }
  return rc;
}

// The provider's info for hp: the one asked for, or verbs falling back to tcp.
Result<fi_info*> choose(const TransportSettings& settings, const HostPort& hp, bool source) {
  const bool defaulted = settings.fabric_provider.empty();
  std::string provider = defaulted ? "verbs" : settings.fabric_provider;
  fi_info* info = nullptr;
  int rc = query(provider, hp, source, &info);
  if (rc == -FI_ENODATA && defaulted) {
    static std::atomic<bool> told{false};
    if (!told.exchange(true)) {
      FERRY_LOG_WARN(
          "rdma: libfabric's verbs provider has no RDMA device for %s (fi_info -p verbs lists "
          "none); using its tcp provider instead (same code path over kernel TCP; choose one "
          "with --fabric-provider)",
          hp.host.empty() ? "this host" : hp.host.c_str());
    }
    provider = "tcp";
    rc = query(provider, hp, source, &info);
  }
  if (rc != 0) {
    return Status(ErrorCode::kUnavailable,
                  "rdma: libfabric provider '" + provider + "' offers no reliable connected " +
                      "endpoint for " + hp.host + ":" + hp.port + " (" +
                      (rc == -FI_ENODATA
                           ? std::string("unknown provider, or no device of it serves that address")
                           : fi_reason(rc)) +
                      "; providers with one here: " + msg_providers() +
                      "; check with fi_info -t FI_EP_MSG)");
  }
  return info;
}

Result<std::shared_ptr<Fabric>> open_fabric(fi_info* info) {
  auto f = std::make_shared<Fabric>();
  f->provider = info->fabric_attr->prov_name;
  if (int rc = fi_fabric(info->fabric_attr, &f->fabric, nullptr); rc) {
    f->fabric = nullptr;
    return Status(ErrorCode::kIo, "rdma: cannot open fabric " +
                                      std::string(info->fabric_attr->name) + " of provider " +
                                      f->provider + ": " + fi_reason(rc));
  }
  return f;
}

ConnectParams our_params() {
  ConnectParams p{};
  std::memcpy(p.magic, "FRDM", 4);
  p.version = 1;
  store_be32(reinterpret_cast<uint8_t*>(&p.rx_depth), kRxDepth);
  store_be32(reinterpret_cast<uint8_t*>(&p.max_frame), kFrameHeaderSize + kMaxPayload);
  return p;
}

// A peer's ConnectParams; *depth = the receives it posted (our initial credits).
Status check_params(const ConnectParams& p, const char* who, uint32_t* depth) {
  if (std::memcmp(p.magic, "FRDM", 4) != 0 || p.version != 1) {
    return Status(ErrorCode::kProtocol,
                  std::string("rdma: the ") + who + " is not a ferry rdma peer of this version");
  }
  *depth = load_be32(reinterpret_cast<const uint8_t*>(&p.rx_depth));
  const uint32_t frame = load_be32(reinterpret_cast<const uint8_t*>(&p.max_frame));
  if (*depth < kControlReserve + 1 || *depth > kImmCredits ||
      frame < kFrameHeaderSize + kMaxPayload) {
    return Status(ErrorCode::kProtocol,
                  std::string("rdma: the ") + who + " posts " + std::to_string(*depth) +
                      " receives of " + std::to_string(frame) + " bytes; ferry needs at least " +
                      std::to_string(kControlReserve + 1) + " of " +
                      std::to_string(kFrameHeaderSize + kMaxPayload));
  }
  return Status::ok();
}

// Connection requests are read by a thread of the listener's own: a provider may only
// progress its passive endpoint inside an event-queue read (the tcp provider does), so the
// queue's own fd would never wake ferry recv's accept loop. The thread queues each request and
// signals an eventfd, which is the listener's wait_fd.
class RdmaListener final : public Listener {
 public:
  RdmaListener(std::shared_ptr<Fabric> fabric, std::string where, std::chrono::seconds link_timeout)
      : fabric_(std::move(fabric)), where_(std::move(where)), link_timeout_(link_timeout) {}
  ~RdmaListener() override {
    stop_.store(true);
    if (reader_.joinable()) {
      // Wakes the reader at once rather than at its next timeout (ferry recv's exit waits).
      fi_eq_entry wake{};
      fi_eq_write(eq_, FI_NOTIFY, &wake, sizeof wake, 0);
      reader_.join();
    }
    for (auto& r : queue_) {
      if (r.info) {
        fi_reject(pep_, r.info->handle, nullptr, 0);
        fi_freeinfo(r.info);
      }
    }
    if (pep_) fi_close(&pep_->fid);
    if (eq_) fi_close(&eq_->fid);
    if (event_fd_ >= 0) ::close(event_fd_);
  }

  Status open(fi_info* info) {
    event_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (event_fd_ < 0)
      return Status(ErrorCode::kIo, "rdma: eventfd: " + std::string(std::strerror(errno)));
    fi_eq_attr attr{};
    attr.size = 64;
    attr.wait_obj = FI_WAIT_UNSPEC;
    attr.flags = FI_WRITE;  // the destructor's wake-up
    if (int rc = fi_eq_open(fabric_->fabric, &attr, &eq_, nullptr); rc) {
      eq_ = nullptr;
      return Status(ErrorCode::kIo, "rdma: cannot open an event queue: " + fi_reason(rc));
    }
    int rc = fi_passive_ep(fabric_->fabric, info, &pep_, nullptr);
    if (rc) pep_ = nullptr;
    if (!rc) rc = fi_pep_bind(pep_, &eq_->fid, 0);
    if (!rc) rc = fi_listen(pep_);
    if (rc) {
      return Status(ErrorCode::kIo, "rdma: cannot listen on " + where_ + " with provider " +
                                        fabric_->provider + ": " + fi_reason(rc) +
                                        " (is the port in use?)");
    }
    reader_ = std::thread([this] { read_requests(); });
    return Status::ok();
  }

  Result<std::unique_ptr<Transport>> accept(int timeout_ms) override {
    Request r;
    {
      std::unique_lock lock(mu_);
      if (!cv_.wait_for(lock, std::chrono::milliseconds(std::max(timeout_ms, 0)),
                        [&] { return !queue_.empty(); })) {
        return Status(ErrorCode::kTimeout, "no rdma peer connected to " + where_);
      }
      r = std::move(queue_.front());
      queue_.pop_front();
      if (queue_.empty()) {
        uint64_t v;
        [[maybe_unused]] ssize_t n = ::read(event_fd_, &v, sizeof v);
      }
    }
    if (!r.error.is_ok()) return r.error;
    uint32_t depth = 0;
    if (auto st = check_params(r.params, "connecting side", &depth); !st) {
      fi_reject(pep_, r.info->handle, nullptr, 0);
      fi_freeinfo(r.info);
      return st;
    }
    auto link = RdmaTransport::create(fabric_, r.info, link_timeout_);  // owns info from here
    if (!link) return link.status();
    if (auto st = (*link)->accept_peer(depth, std::max(timeout_ms, kAcceptCompleteMs)); !st) {
      return st;
    }
    return std::unique_ptr<Transport>(std::move(*link));
  }
  int wait_fd() const noexcept override { return event_fd_; }
  std::string where() const override { return "rdma:" + where_; }

 private:
  struct Request {
    fi_info* info = nullptr;
    ConnectParams params{};
    Status error;
  };

  void read_requests() {
    alignas(fi_eq_cm_entry) uint8_t buf[sizeof(fi_eq_cm_entry) + 256];
    auto* entry = reinterpret_cast<fi_eq_cm_entry*>(buf);
    while (!stop_.load()) {
      uint32_t event = 0;
      // Bounded, so that the destructor's stop is seen.
      ssize_t rd = fi_eq_sread(eq_, &event, buf, sizeof buf, 200, 0);
      if (rd == -FI_EAGAIN || rd == -FI_ETIMEDOUT || rd == -FI_EINTR) continue;
      Request r;
      if (rd == -FI_EAVAIL) {
        fi_eq_err_entry err{};
        fi_eq_readerr(eq_, &err, 0);
        r.error = Status(ErrorCode::kIo, "rdma: a connection request on " + where_ +
                                             " failed: " + fi_reason(err.err));
      } else if (rd < 0) {
        r.error = Status(ErrorCode::kIo, "rdma: reading connection requests on " + where_ + ": " +
                                             fi_reason(static_cast<int>(rd)));
      } else if (event != FI_CONNREQ) {
        if (entry->info) fi_freeinfo(entry->info);
        continue;
      } else {
        r.info = entry->info;
        const size_t data_len = static_cast<size_t>(rd) - sizeof(fi_eq_cm_entry);
        if (data_len >= sizeof r.params) std::memcpy(&r.params, entry->data, sizeof r.params);
      }
      const bool fatal = !r.error.is_ok() && r.info == nullptr && rd != -FI_EAVAIL;
      {
        std::lock_guard lock(mu_);
        queue_.push_back(std::move(r));
      }
      cv_.notify_one();
      const uint64_t one = 1;
      [[maybe_unused]] ssize_t n = ::write(event_fd_, &one, sizeof one);
      if (fatal) return;
    }
  }

  std::shared_ptr<Fabric> fabric_;
  std::string where_;
  std::chrono::seconds link_timeout_;
  fid_eq* eq_ = nullptr;
  fid_pep* pep_ = nullptr;
  int event_fd_ = -1;
  std::thread reader_;
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Request> queue_;  // requests read, not yet accepted
};

}  // namespace

Fabric::~Fabric() {
  if (fabric) fi_close(&fabric->fid);
}

Status registration_error(const std::string& provider, size_t bytes, int fi_err) {
  return Status(ErrorCode::kIo,
                "rdma: cannot register " + std::to_string(bytes >> 20) +
                    " MiB of frame buffers with libfabric provider " + provider + ": " +
                    fi_reason(fi_err) +
                    " (locked memory is limited: raise ulimit -l / LimitMEMLOCK for ferry)");
}

RdmaTransport::RdmaTransport(std::shared_ptr<Fabric> fabric, fi_info* info,
                             std::chrono::seconds link_timeout)
    : fabric_(std::move(fabric)), info_(info), link_timeout_(link_timeout) {}

RdmaTransport::~RdmaTransport() {
  if (ep_) {
    fi_shutdown(ep_, 0);
    fi_close(&ep_->fid);
  }
  if (tx_mr_) fi_close(&tx_mr_->fid);
  if (rx_mr_) fi_close(&rx_mr_->fid);
  if (cq_) fi_close(&cq_->fid);
  if (eq_) fi_close(&eq_->fid);
  if (domain_) fi_close(&domain_->fid);
  if (info_) fi_freeinfo(info_);
}

Result<std::unique_ptr<RdmaTransport>> RdmaTransport::create(std::shared_ptr<Fabric> fabric,
                                                             fi_info* info,
                                                             std::chrono::seconds link_timeout) {
  std::unique_ptr<RdmaTransport> t(new RdmaTransport(std::move(fabric), info, link_timeout));
  int err = 0;
  const char* step = "";
  if (auto st = t->open(&err, &step); !st) return st;
  if (err) {
    return Status(ErrorCode::kIo, "rdma: cannot " + std::string(step) +
                                      " with libfabric provider " + t->provider() + ": " +
                                      fi_reason(err));
  }
  return t;
}

// Sets *err and *step on a libfabric failure; returns non-ok only for ferry's own errors.
Status RdmaTransport::open(int* err, const char** step) {
  auto tx = FramePool::create({.frames = kTxFrames});
  if (!tx) return tx.status();
  auto rx = FramePool::create({.frames = kRxDepth});
  if (!rx) return rx.status();
  tx_pool_ = std::move(*tx);
  rx_pool_ = std::move(*rx);
  tx_ctx_.resize(tx_pool_->size());
  rx_ctx_.resize(rx_pool_->size());
  tx_ring_.resize(tx_pool_->size());
  tx_done_.resize(tx_pool_->size());
  rx_ring_.resize(rx_pool_->size());

  auto fail_at = [&](int rc, const char* what) {
    *err = rc;
    *step = what;
    return Status::ok();
  };
  if (int rc = fi_domain(fabric_->fabric, info_, &domain_, nullptr); rc) {
    domain_ = nullptr;
    return fail_at(rc, "open a domain");
  }
  fi_eq_attr eq_attr{};
  eq_attr.size = 16;
  eq_attr.wait_obj = FI_WAIT_UNSPEC;
  if (int rc = fi_eq_open(fabric_->fabric, &eq_attr, &eq_, nullptr); rc) {
    eq_ = nullptr;
    return fail_at(rc, "open an event queue");
  }
  fi_cq_attr cq_attr{};
  cq_attr.size = kTxFrames + kRxDepth + kCtlSlots;
  cq_attr.format = FI_CQ_FORMAT_DATA;
  cq_attr.wait_obj = FI_WAIT_FD;  // adaptive mode sleeps on it
  if (fi_cq_open(domain_, &cq_attr, &cq_, nullptr) != 0) {
    // A provider without fd waits: the engine then wakes on deadlines only.
    cq_attr.wait_obj = FI_WAIT_NONE;
    if (int rc = fi_cq_open(domain_, &cq_attr, &cq_, nullptr); rc) {
      cq_ = nullptr;
      return fail_at(rc, "open a completion queue");
    }
  } else if (fi_control(&cq_->fid, FI_GETWAIT, &cq_fd_) != 0) {
    cq_fd_ = -1;
  }
  if (int rc = fi_endpoint(domain_, info_, &ep_, nullptr); rc) {
    ep_ = nullptr;
    return fail_at(rc, "open an endpoint");
  }
  if (int rc = fi_ep_bind(ep_, &eq_->fid, 0); rc) return fail_at(rc, "bind the event queue");
  if (int rc = fi_ep_bind(ep_, &cq_->fid, FI_TRANSMIT | FI_RECV); rc) {
    return fail_at(rc, "bind the completion queue");
  }
  if (int rc = fi_enable(ep_); rc) return fail_at(rc, "enable the endpoint");

  // Each pool is one region: one registration each, whatever mr_mode the provider reported.
  // Keys 1 and 2 are used only by providers without FI_MR_PROV_KEY (unique per domain).
  auto reg = [&](FramePool& pool, uint64_t access, uint64_t key, fid_mr** mr) {
    auto mem = pool.memory();
    int rc = fi_mr_reg(domain_, mem.data(), mem.size(), access, 0, key, 0, mr, nullptr);
    if (rc) *mr = nullptr;
    return rc;
  };
  if (int rc = reg(*tx_pool_, FI_SEND, 1, &tx_mr_); rc) {
    return registration_error(provider(), tx_pool_->memory().size(), rc);
  }
  if (int rc = reg(*rx_pool_, FI_RECV, 2, &rx_mr_); rc) {
    return registration_error(provider(), rx_pool_->memory().size(), rc);
  }
  tx_desc_ = fi_mr_desc(tx_mr_);
  rx_desc_ = fi_mr_desc(rx_mr_);

  // Receives go up before the connection completes: the peer may send at once.
  repost();
  posting_initial_ = false;
  if (!error_.is_ok()) return error_;
  if (posted_ != kRxDepth) {
    return Status(ErrorCode::kIo, "rdma: provider " + provider() + " took only " +
                                      std::to_string(posted_) + " of " + std::to_string(kRxDepth) +
                                      " receives");
  }
  return Status::ok();
}

Status RdmaTransport::wait_connected(const std::string& where, int timeout_ms) {
  alignas(fi_eq_cm_entry) uint8_t buf[sizeof(fi_eq_cm_entry) + 256];
  auto* entry = reinterpret_cast<fi_eq_cm_entry*>(buf);
  uint32_t event = 0;
  const TimePoint deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    ssize_t rd = fi_eq_sread(eq_, &event, buf, sizeof buf,
                             static_cast<int>(std::max<int64_t>(left.count(), 0)), 0);
    if (rd == -FI_EAGAIN || rd == -FI_ETIMEDOUT) {
      if (Clock::now() < deadline) continue;
      return Status(ErrorCode::kTimeout,
                    "rdma: connecting to " + where + " with provider " + provider() + " timed out");
    }
    if (rd == -FI_EAVAIL) {
      fi_eq_err_entry err{};
      fi_eq_readerr(eq_, &err, 0);
      std::string why = fi_reason(err.err);
      if (err.err == FI_ECONNREFUSED) why += " (is ferry recv listening there with rdma:?)";
      return Status(
          err.err == FI_ECONNREFUSED ? ErrorCode::kRefused : ErrorCode::kIo,
          "rdma: cannot connect to " + where + " with provider " + provider() + ": " + why);
    }
    if (rd < 0) {
      return Status(ErrorCode::kIo, "rdma: waiting for the connection to " + where + ": " +
                                        fi_reason(static_cast<int>(rd)));
    }
    if (event == FI_CONNECTED) {
      const size_t data_len = static_cast<size_t>(rd) - sizeof(fi_eq_cm_entry);
      if (data_len >= sizeof(ConnectParams)) {
        ConnectParams p;
        std::memcpy(&p, entry->data, sizeof p);
        uint32_t depth = 0;
        FERRY_RETURN_IF_ERROR(check_params(p, "listening side", &depth));
        credits_ = depth;
        stats_.peer_rx_depth = depth;
      }
      return Status::ok();  // server side: the client's params were checked at the request
    }
    if (event == FI_SHUTDOWN) {
      return Status(ErrorCode::kClosed, "rdma: " + where + " closed the connection at once");
    }
  }
}

Status RdmaTransport::connect_to_peer(const std::string& where, int timeout_ms) {
  ConnectParams p = our_params();
  if (int rc = fi_connect(ep_, info_->dest_addr, &p, sizeof p); rc) {
    return Status(ErrorCode::kIo, "rdma: cannot connect to " + where + " with provider " +
                                      provider() + ": " + fi_reason(rc));
  }
  auto st = wait_connected(where, timeout_ms);
  if (st && stats_.peer_rx_depth == 0) {
    return Status(ErrorCode::kProtocol, "rdma: " + where + " accepted without ferry's parameters");
  }
  next_tick_ = last_heard_ = Clock::now();
  return st;
}

Status RdmaTransport::accept_peer(uint32_t peer_rx_depth, int timeout_ms) {
  credits_ = peer_rx_depth;
  stats_.peer_rx_depth = peer_rx_depth;
  ConnectParams p = our_params();
  if (int rc = fi_accept(ep_, &p, sizeof p); rc) {
    return Status(ErrorCode::kIo, "rdma: cannot accept a connection with provider " + provider() +
                                      ": " + fi_reason(rc));
  }
  next_tick_ = last_heard_ = Clock::now();
  return wait_connected("the connecting peer", timeout_ms);
}

TransportCaps RdmaTransport::caps() const noexcept {
  TransportCaps c;
  c.max_frame = tx_pool_->frame_capacity();
  c.max_burst = 32;
  c.reliable = true;
  c.ordered = true;
  c.registered = true;
  c.tx_done = "send completed by the provider (on verbs: acknowledged by the peer's NIC)";
  return c;
}

json::Value RdmaTransport::link_stats() const {
  return json::Value::object({{"provider", provider()},
                              {"messages_sent", stats_.messages_sent},
                              {"messages_received", stats_.messages_received},
                              {"control_sent", stats_.control_sent},
                              {"control_received", stats_.control_received},
                              {"credit_stalls", stats_.credit_stalls},
                              {"peak_unreturned", stats_.peak_unreturned},
                              {"peer_rx_depth", stats_.peer_rx_depth}});
}

Result<std::unique_ptr<Listener>> listen(const std::string& address,
                                         const TransportSettings& settings) {
  FERRY_RETURN_IF_ERROR(load_libfabric());
  auto hp = parse_address(address);
  if (!hp) return hp.status();
  auto info = choose(settings, *hp, /*source=*/true);
  if (!info) return info.status();
  auto fabric = open_fabric(*info);
  if (!fabric) {
    fi_freeinfo(*info);
    return fabric.status();
  }
  auto l = std::make_unique<RdmaListener>(*fabric, address, settings.link_timeout);
  auto st = l->open(*info);
  fi_freeinfo(*info);
  if (!st) return st;
  return std::unique_ptr<Listener>(std::move(l));
}

Result<std::unique_ptr<Transport>> connect(const std::string& address, int timeout_ms,
                                           const TransportSettings& settings) {
  FERRY_RETURN_IF_ERROR(load_libfabric());
  auto hp = parse_address(address);
  if (!hp) return hp.status();
  auto info = choose(settings, *hp, /*source=*/false);
  if (!info) return info.status();
  auto fabric = open_fabric(*info);
  if (!fabric) {
    fi_freeinfo(*info);
    return fabric.status();
  }
  auto link = RdmaTransport::create(*fabric, *info, settings.link_timeout);
  if (!link) return link.status();
  if (auto st = (*link)->connect_to_peer(address, timeout_ms); !st) return st;
  return std::unique_ptr<Transport>(std::move(*link));
}

}  // namespace ferry::dataplane::rdma
