// Notifications (GET /api/v1/notifications, grouped) and follow requests to approve or deny.

import { api } from "../api.js";
import { errorText, h, say, timeAgo } from "../dom.js";
import { avatar } from "../media.js";

export async function notificationsView() {
  const page = await api("GET", "/notifications", { query: { limit: 50 } });
  const list = h("ul", { class: "notifications card", "aria-label": "Notifications" });
  for (const g of page.notifications) {
    const href = g.post_id ? `#/p/${g.post_id}` : g.kind === "follow_request" ? "#/requests" : g.actors[0] ? `#/u/${g.actors[0].username}` : "#/";
    list.append(h("li", { class: g.unread ? "unread" : "" },
      g.actors[0] ? avatar(g.actors[0]) : null,
      h("a", { href }, g.text),
      h("time", { datetime: g.latest_at }, timeAgo(g.latest_at))));
  }
  if (!page.notifications.length) list.append(h("li", {}, "No notifications yet."));
  if (page.unread_count) api("POST", "/notifications/read", { body: {} }).catch(() => {});
  return h("div", {}, h("h1", {}, "Notifications"), h("p", {}, h("a", { href: "#/requests" }, "Follow requests")), list);
}

export async function requestsView() {
  const page = await api("GET", "/follow_requests", { query: { limit: 100 } });
  const list = h("ul", { class: "people card", "aria-label": "Follow requests" });
  for (const r of page.requests) {
    const act = (verb) => async () => {
      try {
        await api("POST", `/follow_requests/${r.user.user_id}/${verb}`);
        item.remove();
        say(verb === "approve" ? `${r.user.username} now follows you` : "Request denied");
      } catch (err) { say(errorText(err)); }
    };
    const item = h("li", {}, avatar(r.user), h("a", { href: `#/u/${r.user.username}` }, r.user.username),
      h("button", { type: "button", class: "primary", onclick: act("approve") }, "Approve"),
      h("button", { type: "button", class: "secondary", onclick: act("deny") }, "Deny"));
    list.append(item);
  }
  if (!page.requests.length) list.append(h("li", {}, "No pending requests."));
  return h("div", {}, h("h1", {}, "Follow requests"), list);
}
