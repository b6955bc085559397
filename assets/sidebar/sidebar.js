// The salesperson's sidebar: signs the JS-SDK in, asks WeCom which chat is open, and loads the
// server-rendered view of that customer. Every action posts JSON with the session's CSRF token
// and swaps the view for the one the server answers. No inline script (the page's CSP forbids it).
(function () {
  'use strict';
  var main = document.getElementById('main');
  var csrf = document.querySelector('meta[name="csrf-token"]').getAttribute('content');
  var apis = ['getContext', 'getCurExternalContact', 'getCurExternalChat', 'sendChatMessage'];
  var current = null;
  var DRAFTS = 'scrm-sidebar-drafts';

  function esc(s) {
    return String(s).replace(/[&<>"']/g, function (c) {
      return { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c];
    });
  }
  function notice(title, detail, retry) {
    main.innerHTML = '<section class="notice error"><h2>' + esc(title) + '</h2><p>' + esc(detail || '') +
      '</p>' + (retry ? '<button type="button" data-retry>重试</button>' : '') + '</section>';
  }
  function toast(text) {
    var t = document.createElement('div');
    t.className = 'toast';
    t.setAttribute('role', 'alert');
    t.textContent = text;
    document.body.appendChild(t);
    setTimeout(function () { t.remove(); }, 4000);
  }
  function saveDrafts() {
    var drafts = {};
    main.querySelectorAll('textarea[name]').forEach(function (t) { if (t.value) { drafts[t.name] = t.value; } });
    try { sessionStorage.setItem(DRAFTS, JSON.stringify({ path: current, drafts: drafts })); } catch (e) { /* private mode */ }
  }
  function restoreDrafts() {
    var saved = null;
    try { saved = JSON.parse(sessionStorage.getItem(DRAFTS) || 'null'); } catch (e) { saved = null; }
    if (!saved || saved.path !== current) { return; }
    Object.keys(saved.drafts || {}).forEach(function (name) {
      var t = main.querySelector('textarea[name="' + name + '"]');
      if (t && !t.value) { t.value = saved.drafts[name]; }
    });
    sessionStorage.removeItem(DRAFTS);
  }
  // 401: the session is over. Keep what was typed, sign in again (WeCom OAuth), come back.
  function answer(r) {
    if (r.status === 401) {
      saveDrafts();
      location.reload();
      return Promise.reject(null);
    }
    return r.text().then(function (text) {
      if (!r.ok) { return Promise.reject(text); }
      return text;
    });
  }
  function load(path) {
    current = path;
    return fetch(path, { credentials: 'same-origin' }).then(answer).then(function (html) {
      main.innerHTML = html;
      restoreDrafts();
    }, function (html) { if (html) { main.innerHTML = html; } });
  }
  function post(path, body) {
    return fetch(path, {
      method: 'POST',
      credentials: 'same-origin',
      headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': csrf },
      body: JSON.stringify(body)
    }).then(answer).then(function (html) { main.innerHTML = html; }, function (text) {
      if (text) { toast(text.replace(/<[^>]*>/g, ' ').replace(/\s+/g, ' ').trim()); }
    });
  }

  // An avatar WeCom's CDN does not serve (offline, blocked): the initial instead.
  document.addEventListener('error', function (ev) {
    var img = ev.target;
    if (!img.matches || !img.matches('img.avatar')) { return; }
    var d = document.createElement('div');
    d.className = 'avatar none';
    d.textContent = (img.getAttribute('data-initial') || '?');
    img.replaceWith(d);
  }, true);

  // Quick replies: loaded when the box is opened, searched as the person types, sent into the
  // chat by WeCom (sendChatMessage), then counted.
  function loadReplies(box, q) {
    var list = box.querySelector('.reply-list');
    fetch(box.getAttribute('data-replies') + '?q=' + encodeURIComponent(q || ''), { credentials: 'same-origin' })
      .then(answer).then(function (html) { list.innerHTML = html; }, function (html) { if (html) { list.innerHTML = html; } });
  }
  document.addEventListener('toggle', function (ev) {
    var box = ev.target;
    if (box.matches && box.matches('details[data-replies]') && box.open && !box.hasAttribute('data-loaded')) {
      box.setAttribute('data-loaded', '');
      loadReplies(box, '');
    }
  }, true);
  var searchTimer = null;
  document.addEventListener('input', function (ev) {
    var input = ev.target.closest('.reply-search');
    if (!input) { return; }
    clearTimeout(searchTimer);
    searchTimer = setTimeout(function () { loadReplies(input.closest('details[data-replies]'), input.value.trim()); }, 250);
  });
  function sendReply(button) {
    var item = button.closest('[data-reply]');
    var text = item.querySelector('.reply-body').textContent;
    button.disabled = true;
    wx.invoke('sendChatMessage', { msgtype: 'text', enterChat: true, text: { content: text } }, function (r) {
      button.disabled = false;
      if (!r || r.err_msg !== 'sendChatMessage:ok') { toast('发送失败：' + ((r && r.err_msg) || '企业微信没有响应')); return; }
      toast('已发送到聊天');
      fetch('/sidebar/replies/' + encodeURIComponent(button.getAttribute('data-send')) + '/sent', {
        method: 'POST', credentials: 'same-origin',
        headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': csrf }, body: '{}'
      }).then(function (res) {
        if (res.ok) {
          var count = item.querySelector('.reply-head .muted');
          var n = parseInt((count.textContent.match(/\d+/) || ['0'])[0], 10) + 1;
          count.textContent = '已用 ' + n + ' 次';
        }
      });
    });
  }

  document.addEventListener('click', function (ev) {
    var send = ev.target.closest('button[data-send]');
    if (send) { sendReply(send); return; }
    var retry = ev.target.closest('[data-retry]');
    if (retry) { location.reload(); return; }
    var more = ev.target.closest('[data-more]');
    if (more) {
      more.disabled = true;
      fetch(more.getAttribute('data-more'), { credentials: 'same-origin' }).then(answer).then(function (html) {
        more.insertAdjacentHTML('beforebegin', html);
        more.remove();
      }, function () { more.disabled = false; });
      return;
    }
    var reload = ev.target.closest('[data-load]');
    if (reload) { load(reload.getAttribute('data-load')); return; }
    var b = ev.target.closest('button[data-post]');
    if (!b) { return; }
    ev.preventDefault();
    var body = {};
    var k = b.getAttribute('data-k');
    if (k) {
      var v = b.getAttribute('data-v');
      body[k] = k === 'in_days' ? Number(v) : v;
    }
    if (b.hasAttribute('data-on')) { body.on = b.getAttribute('data-on') === 'true'; }
    b.disabled = true;
    post(b.getAttribute('data-post'), body);
  });
  document.addEventListener('submit', function (ev) {
    var f = ev.target.closest('form[data-post]');
    if (!f) { return; }
    ev.preventDefault();
    var body = {};
    new FormData(f).forEach(function (v, k) { body[k] = v; });
    if (body.date) {
      // A picked date: remind at 09:00 China Standard Time that day.
      body.due_at_ms = Date.parse(body.date + 'T09:00:00+08:00');
      delete body.date;
    }
    post(f.getAttribute('data-post'), body);
  });

  function start() {
    wx.invoke('getContext', {}, function (c) {
      if (c.err_msg !== 'getContext:ok') { notice('无法读取打开位置', c.err_msg, true); return; }
      if (c.entry === 'single_chat_tools' || c.entry === 'contact_profile') {
        wx.invoke('getCurExternalContact', {}, function (r) {
          if (r.err_msg === 'getCurExternalContact:ok') { load('/sidebar/customer/' + encodeURIComponent(r.userId)); }
          else { notice('无法获取当前客户', r.err_msg + '。请在与客户的单聊中打开。', true); }
        });
      } else if (c.entry === 'group_chat_tools') {
        wx.invoke('getCurExternalChat', {}, function (r) {
          if (r.err_msg === 'getCurExternalChat:ok') { load('/sidebar/chat/' + encodeURIComponent(r.chatId)); }
          else { notice('无法获取当前客户群', r.err_msg + '。请在客户群聊中打开。', true); }
        });
      } else {
        load('/sidebar/home');
      }
    });
  }

  if (typeof window.wx === 'undefined') {
    notice('企业微信 JS-SDK 未加载', '请在企业微信客户端中打开此页面。', true);
    return;
  }
  // WeCom refused our signature (a ticket it no longer takes): once, the server fetches fresh
  // tickets and the page starts again; a second refusal is shown with WeCom's errMsg.
  var REFRESHED = 'scrm-sidebar-ticket-refreshed';
  var refreshed = false;
  try { refreshed = sessionStorage.getItem(REFRESHED) === '1'; sessionStorage.removeItem(REFRESHED); } catch (e) { refreshed = true; }
  var signUrl = '/sidebar/jssdk?url=' + encodeURIComponent(location.href.split('#')[0]);
  function configFailed(e) {
    var msg = (e && e.errMsg) || '';
    if (/invalid signature/.test(msg) && !refreshed) {
      try { sessionStorage.setItem(REFRESHED, '1'); } catch (x) { /* private mode */ }
      fetch(signUrl + '&refresh=true', { credentials: 'same-origin' }).then(function () { location.reload(); },
        function () { notice('网络错误', '无法连接服务器，请检查网络后重试。', true); });
      return;
    }
    notice('企业微信 JS-SDK 配置失败', msg + '。请点“重试”；如果仍然失败，请联系管理员检查应用的可信域名和 JS-SDK 设置。', true);
  }
  // The shell carries the signatures for its own URL; any other URL (or none) asks the server.
  var inline = null;
  try { inline = JSON.parse(document.querySelector('meta[name="jssdk-signed"]').getAttribute('content') || 'null'); } catch (e) { inline = null; }
  var signed = inline && inline.url === location.href.split('#')[0] ? Promise.resolve(inline) :
    fetch(signUrl, { credentials: 'same-origin' })
      .then(function (r) { if (r.status === 401) { location.reload(); } return r.json(); });
  signed
    .then(function (sig) {
      if (sig.error) { notice('签名失败', sig.error, true); return; }
      wx.error(configFailed);
      wx.config({ beta: true, debug: false, appId: sig.corpid, timestamp: sig.config.timestamp,
        nonceStr: sig.config.nonceStr, signature: sig.config.signature, jsApiList: apis });
      wx.ready(function () {
        wx.agentConfig({ corpid: sig.corpid, agentid: sig.agentid, timestamp: sig.agent.timestamp,
          nonceStr: sig.agent.nonceStr, signature: sig.agent.signature, jsApiList: apis,
          success: start,
          fail: configFailed });
      });
    }, function () { notice('网络错误', '无法连接服务器，请检查网络后重试。', true); });
})();
