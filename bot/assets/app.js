// holdpoint review queue.
//
// Everything this page shows comes from an agent that may have been
// prompt-injected: the command, the rule parts, the host, the annotations.
// So the page is built with createElement and textContent only (no string
// is ever parsed as HTML), no field is trusted to have a type, invisible and
// direction-changing characters are shown as visible tokens such as
// ⟨U+202E⟩, and the rules that fired are shown above the command, so a long
// command cannot push what matters out of sight.
'use strict';

(function () {
  const REFRESH_MS = 5000;
  const RECONNECT_MS = 5000;
  const COLLAPSED_CHARS = 2000;
  const PART_LIMIT = 800;
  const PART_KEEP = 300;
  const NOTICE_MS = 30000;
  const ID_RE = /^[0-9a-f]{32}$/;
  const HASH_RE = /^[0-9a-f]{64}$/;

  const RISKS = ['low', 'medium', 'high', 'critical'];
  const STATUSES = ['pending', 'approved', 'denied', 'expired', 'cancelled'];
  const DECISIONS = ['allow', 'review', 'deny'];
  const SEVERITIES = ['info', 'warning', 'danger'];

  // ---------------------------------------------------------------- data

  function isObj(v) {
    return v !== null && typeof v === 'object' && !Array.isArray(v);
  }
  // An own property of an object, or undefined: never something inherited.
  function field(o, k) {
    return isObj(o) && Object.prototype.hasOwnProperty.call(o, k) ? o[k] : undefined;
  }
  function str(v) {
    return typeof v === 'string' ? v : '';
  }
  function num(v) {
    return typeof v === 'number' && Number.isFinite(v) ? v : null;
  }
  function arr(v) {
    return Array.isArray(v) ? v : [];
  }
  function oneOf(v, allowed) {
    return typeof v === 'string' && allowed.indexOf(v) >= 0 ? v : null;
  }

  // ---------------------------------------------------------- characters

  // What a reviewer cannot see or cannot trust to look like what it is:
  // control characters (C0, DEL, C1), format characters (bidirectional
  // embeddings, overrides, isolates and marks, zero-width characters, the
  // BOM, soft hyphens, tag characters), surrogates, private-use and
  // unassigned code points, line and paragraph separators, spaces other
  // than U+0020, invisible fillers and blanks, and variation selectors.
  const HIDDEN_CLASS =
    '[\\p{Cc}\\p{Cf}\\p{Cs}\\p{Co}\\p{Cn}\\p{Zl}\\p{Zp}' +
    '\\u00A0\\u1680\\u2000-\\u200A\\u202F\\u205F\\u3000' +
    '\\u034F\\u115F\\u1160\\u17B4\\u17B5\\u180B-\\u180F\\u2800\\u3164\\uFFA0' +
    '\\uFE00-\\uFE0F\\u{E0100}-\\u{E01EF}]';
  const HIDDEN_SPLIT = new RegExp('(' + HIDDEN_CLASS + ')', 'u');
  const HIDDEN_ALL = new RegExp(HIDDEN_CLASS, 'gu');

  const NAMES = new Map([
    [0x00, 'null'], [0x09, 'tab'], [0x0a, 'line feed (a new line)'],
    [0x0d, 'carriage return'], [0x1b, 'escape'], [0x7f, 'delete'],
    [0x00a0, 'no-break space'], [0x00ad, 'soft hyphen'],
    [0x061c, 'Arabic letter mark'], [0x200b, 'zero width space'],
    [0x200c, 'zero width non-joiner'], [0x200d, 'zero width joiner'],
    [0x200e, 'left-to-right mark'], [0x200f, 'right-to-left mark'],
    [0x202a, 'left-to-right embedding'], [0x202b, 'right-to-left embedding'],
    [0x202c, 'pop directional formatting'], [0x202d, 'left-to-right override'],
    [0x202e, 'right-to-left override'], [0x2060, 'word joiner'],
    [0x2066, 'left-to-right isolate'], [0x2067, 'right-to-left isolate'],
    [0x2068, 'first strong isolate'], [0x2069, 'pop directional isolate'],
    [0x2028, 'line separator'], [0x2029, 'paragraph separator'],
    [0xfeff, 'zero width no-break space (BOM)'],
  ]);

  function tokenFor(ch) {
    const cp = ch.codePointAt(0) || 0;
    const span = document.createElement('span');
    span.className = 'cc';
    span.textContent = '\u27E8U+' + cp.toString(16).toUpperCase().padStart(4, '0') + '\u27E9';
    span.title = NAMES.get(cp) || 'an invisible, control or look-alike character';
    return span;
  }

  // Appends text to `parent`, every hidden character as a visible token.
  // With `layout`, newlines and tabs stay as they are (inside <pre>).
  function put(parent, text, layout) {
    const parts = String(text).split(HIDDEN_SPLIT);
    let run = '';
    for (let i = 0; i < parts.length; i++) {
      const p = parts[i];
      if (i % 2 === 0 || (layout && (p === '\n' || p === '\t'))) {
        run += p;
        continue;
      }
      if (run) {
        parent.appendChild(document.createTextNode(run));
        run = '';
      }
      parent.appendChild(tokenFor(p));
    }
    if (run) parent.appendChild(document.createTextNode(run));
    return parent;
  }

  function countHidden(text, layout) {
    let n = 0;
    for (const m of String(text).matchAll(HIDDEN_ALL)) {
      if (!(layout && (m[0] === '\n' || m[0] === '\t'))) n++;
    }
    return n;
  }

  // ------------------------------------------------------------- helpers

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }
  // An element holding untrusted text, hidden characters made visible.
  function txt(tag, cls, value) {
    return put(el(tag, cls), str(value), false);
  }
  function button(label, cls, type) {
    const b = el('button', cls, label);
    b.type = type || 'button';
    return b;
  }
  function fmtInt(n) {
    return Number(n).toLocaleString('en-US');
  }
  function dur(ms) {
    const s = Math.max(0, Math.floor(ms / 1000));
    const pad = (x) => String(x).padStart(2, '0');
    if (s < 60) return s + 's';
    if (s < 3600) return Math.floor(s / 60) + 'm ' + pad(s % 60) + 's';
    if (s < 86400) return Math.floor(s / 3600) + 'h ' + pad(Math.floor(s / 60) % 60) + 'm';
    return Math.floor(s / 86400) + 'd ' + pad(Math.floor(s / 3600) % 24) + 'h';
  }
  function clock(ms) {
    const d = new Date(ms);
    return isNaN(d.getTime()) ? '' : d.toLocaleString();
  }
  function firstChars(text, n) {
    const chars = Array.from(text);
    return chars.length > n ? chars.slice(0, n).join('') + '…' : text;
  }

  // ---------------------------------------------------------------- page

  const $ = (id) => document.getElementById(id);
  let pendingEl, recentEl, noticesEl, bannerEl, connEl;
  const cards = new Map(); // request id -> card
  let recentById = new Map();
  // Who this page decides as (`web:alice`): their own agents' requests are
  // marked, and they hear when one is escalated and how it ends.
  let me = '';
  let recentKey = '';
  let clockOffset = 0; // bot clock minus ours
  let stopped = false;
  let events = null;
  let firstLoad = true;
  let anonymous = 0;

  function setConn(state, text) {
    connEl.className = 'conn conn-' + state;
    connEl.textContent = text;
  }

  function banner(text) {
    if (!text) {
      bannerEl.hidden = true;
      bannerEl.replaceChildren();
      return;
    }
    bannerEl.hidden = false;
    bannerEl.replaceChildren(document.createTextNode(text));
  }

  // A notice at the top; `build` fills it (with untrusted text via put).
  function notice(kind, build) {
    const n = el('div', 'notice notice-' + kind);
    const body = el('span', 'notice-text');
    build(body);
    const close = button('\u00D7', 'quiet close');
    close.title = 'Dismiss';
    close.addEventListener('click', () => n.remove());
    n.append(body, close);
    noticesEl.prepend(n);
    while (noticesEl.children.length > 6) noticesEl.lastChild.remove();
    setTimeout(() => n.remove(), NOTICE_MS);
  }

  // ---------------------------------------------------------------- card

  function badge(text, cls) {
    return el('span', 'badge ' + cls, text);
  }

  function partBlock(part) {
    const row = el('div', 'part');
    row.append(el('span', 'part-label', 'matched'));
    const code = el('code', 'part-text plain');
    const chars = Array.from(part);
    let full = chars.length <= PART_LIMIT;
    const draw = () => {
      code.replaceChildren();
      if (full) {
        put(code, part, false);
      } else {
        put(code, chars.slice(0, PART_KEEP).join(''), false);
        code.append(el('span', 'cut', ' … ' + fmtInt(chars.length - 2 * PART_KEEP) + ' more characters … '));
        put(code, chars.slice(chars.length - PART_KEEP).join(''), false);
      }
    };
    draw();
    row.append(code);
    if (!full) {
      const t = button('Show the whole part (' + fmtInt(chars.length) + ' characters)', 'quiet toggle');
      t.addEventListener('click', () => {
        full = true;
        draw();
        t.remove();
      });
      row.append(t);
    }
    return row;
  }

  function hitsOf(verdict) {
    const decision = oneOf(field(verdict, 'decision'), DECISIONS);
    const hits = arr(field(verdict, 'hits')).filter(isObj);
    let deciding = hits.filter((h) => field(h, 'decision') === decision);
    // A verdict whose hits do not say what decided: show them all.
    if (!deciding.length) deciding = hits;
    const seen = new Set();
    const unique = [];
    for (const h of deciding) {
      const key = str(field(h, 'rule')) + '\u0000' + str(field(h, 'part'));
      if (seen.has(key)) continue;
      seen.add(key);
      unique.push(h);
    }
    return { deciding: unique, others: hits.filter((h) => deciding.indexOf(h) < 0) };
  }

  function rulesBlock(verdict) {
    const box = el('div', 'rules');
    box.append(el('h3', 'label', 'Why it needs review'));
    const { deciding, others } = hitsOf(verdict);
    const ul = el('ul', 'hits');
    if (!deciding.length) {
      ul.append(el('li', 'hit none', 'The request names no rule.'));
    }
    for (const h of deciding) {
      const li = el('li', 'hit');
      const top = el('div', 'hit-top');
      const risk = oneOf(field(h, 'risk'), RISKS);
      if (risk) top.append(badge(risk, 'risk risk-' + risk));
      top.append(txt('code', 'rule plain', field(h, 'rule')));
      top.append(txt('span', 'reason v', field(h, 'reason')));
      li.append(top);
      const part = str(field(h, 'part'));
      if (part) li.append(partBlock(part));
      ul.append(li);
    }
    box.append(ul);
    if (others.length) {
      const d = el('details', 'other-hits');
      d.append(el('summary', null, others.length + ' other rule ' + (others.length === 1 ? 'hit' : 'hits') + ' that did not decide'));
      const ol = el('ul', 'hits small');
      for (const h of others) {
        const li = el('li', 'hit');
        const dec = oneOf(field(h, 'decision'), DECISIONS);
        if (dec) li.append(badge(dec, 'decision decision-' + dec));
        li.append(txt('code', 'rule plain', field(h, 'rule')), document.createTextNode(' '));
        li.append(txt('code', 'part-text plain', firstChars(str(field(h, 'part')), 200)));
        ol.append(li);
      }
      d.append(ol);
      box.append(d);
    }
    return box;
  }

  function commandBlock(cmd) {
    const wrap = el('div', 'command');
    const chars = Array.from(cmd);
    const total = chars.length;
    const lines = cmd.split('\n').length;
    const head = el('div', 'command-head');
    head.append(el('h3', 'label', 'Command'));
    if (lines > 1) head.append(badge(lines + ' lines', 'lines'));
    head.append(el('span', 'meta', fmtInt(total) + ' characters'));
    const pre = el('pre', 'cmd plain');
    if (lines > 1) pre.classList.add('multi');
    wrap.append(head, pre);
    let expanded = false;
    const toggle = button('', 'quiet toggle');
    const draw = () => {
      const shown = expanded || total <= COLLAPSED_CHARS ? cmd : chars.slice(0, COLLAPSED_CHARS).join('');
      pre.replaceChildren();
      for (const line of shown.split('\n')) {
        pre.append(put(el('span', 'ln'), line, true));
      }
      if (total > COLLAPSED_CHARS) {
        if (!expanded) {
          pre.append(el('span', 'cut', '… ' + fmtInt(total - COLLAPSED_CHARS) + ' more characters not shown'));
        }
        toggle.textContent = expanded ? 'Show only the first ' + fmtInt(COLLAPSED_CHARS) + ' characters' : 'Show all ' + fmtInt(total) + ' characters';
      }
    };
    if (total > COLLAPSED_CHARS) {
      toggle.addEventListener('click', () => {
        expanded = !expanded;
        draw();
      });
      const more = el('div', 'more');
      more.append(toggle);
      wrap.append(more);
    }
    draw();
    return wrap;
  }

  function factsBlock(r) {
    const dl = el('dl', 'facts');
    const row = (label, value, cls) => {
      dl.append(el('dt', null, label));
      const v = str(value);
      dl.append(v ? txt('dd', cls || 'v', v) : el('dd', 'none', '—'));
    };
    row('runner', field(r, 'runner'), 'plain');
    row('host', field(r, 'host'), 'plain');
    row('directory', field(r, 'cwd'), 'plain');
    row('agent', field(r, 'agent'));
    row('requested by', field(r, 'requested_by'), 'plain');
    row('via', field(r, 'front_end'));
    row('agent session', field(r, 'session'), 'plain');
    row('request', field(r, 'id'), 'plain');
    return dl;
  }

  function annotationsBlock(list) {
    const anns = arr(list).filter(isObj);
    if (!anns.length) return null;
    const box = el('div', 'annotations');
    box.append(el('h3', 'label', 'What the runner found'));
    for (const a of anns) {
      const sev = oneOf(field(a, 'severity'), SEVERITIES) || 'warning';
      const div = el('div', 'ann sev-' + sev);
      const head = el('div', 'ann-head');
      head.append(badge(sev, 'sev sev-' + sev), txt('span', 'probe', field(a, 'probe')), txt('span', 'ann-title v', field(a, 'title')));
      div.append(head);
      const err = str(field(a, 'error'));
      if (err) {
        const e = el('div', 'ann-error');
        e.append(el('span', 'part-label', 'probe failed'), txt('span', 'v', err));
        div.append(e);
      }
      const facts = arr(field(a, 'facts')).filter(isObj);
      if (facts.length) {
        const dl = el('dl', 'facts');
        for (const f of facts) {
          dl.append(txt('dt', 'v', field(f, 'label')), txt('dd', 'v', field(f, 'value')));
        }
        div.append(dl);
      }
      const items = arr(field(a, 'items')).filter(isObj);
      if (items.length) {
        const ul = el('ul', 'items');
        for (const it of items) {
          const li = el('li');
          li.append(txt('code', 'item-id plain', field(it, 'id')));
          const text = str(field(it, 'text'));
          if (text) li.append(document.createTextNode(' '), txt('span', 'v', text));
          const details = arr(field(it, 'details')).map(str).filter(Boolean);
          if (details.length) {
            const d = el('span', 'details');
            d.append(document.createTextNode(' ('));
            details.forEach((x, i) => {
              if (i) d.append(document.createTextNode(', '));
              put(d, x, false);
            });
            d.append(document.createTextNode(')'));
            li.append(d);
          }
          for (const flag of arr(field(it, 'flags')).map(str).filter(Boolean)) {
            li.append(document.createTextNode(' '), txt('span', 'flag', flag));
          }
          ul.append(li);
        }
        div.append(ul);
      }
      if (field(a, 'truncated') === true) div.append(el('div', 'note', '… cut short: there is more than shown.'));
      box.append(div);
    }
    return box;
  }

  // A short, single-line description of a request for notices.
  function summaryOf(r) {
    const { deciding } = hitsOf(field(r, 'verdict'));
    const part = deciding.length ? str(field(deciding[0], 'part')) : '';
    return firstChars(part || str(field(r, 'command')), 80);
  }

  function buildCard(r) {
    const id = str(field(r, 'id'));
    const hash = str(field(r, 'command_hash'));
    const cmd = str(field(r, 'command'));
    const verdict = field(r, 'verdict');
    const risk = oneOf(field(verdict, 'risk'), RISKS) || 'critical';
    const created = num(field(r, 'created_at'));
    const expires = num(field(r, 'expires_at'));

    const mine = me !== '' && str(field(r, 'requested_by')) === me;
    const card = { id, hash, risk, busy: false, decidedHere: false, summary: summaryOf(r), mine };
    const root = el('article', 'card risk-' + risk);
    if (ID_RE.test(id)) {
      root.id = id;
      root.dataset.id = id;
    }
    card.el = root;

    const head = el('header', 'card-head');
    head.append(badge(risk, 'risk risk-' + risk));
    if (mine) head.append(badge('your request', 'mine'));
    const where = el('span', 'where');
    where.append(txt('span', 'plain', field(r, 'runner')), document.createTextNode(' on '), txt('span', 'plain', field(r, 'host')));
    const agent = str(field(r, 'agent'));
    if (agent) where.append(document.createTextNode(' · '), txt('span', 'v', agent));
    head.append(where, el('span', 'spacer'));
    const age = el('span', 'age');
    const escal = el('span', 'escalation');
    const left = el('span', 'left');
    head.append(age, escal, left);
    let steps = [];
    let pages = [];
    let escalatedSeen = null;
    const votesEl = el('div', 'votes');
    // What changes while it waits: escalation steps and votes.
    card.live = (r) => {
      steps = (Array.isArray(field(r, 'escalation')) ? field(r, 'escalation') : [])
        .map((s) => ({ action: oneOf(field(s, 'action'), ['remind', 'notify', 'page']), due: num(field(s, 'due_at')), fired: num(field(s, 'fired_at')) }))
        .filter((s) => s.action && s.due !== null);
      pages = arr(field(r, 'pages'))
        .map((p) => ({ pager: oneOf(field(p, 'pager'), ['pagerduty', 'opsgenie']), state: oneOf(field(p, 'state'), ['sending', 'open', 'resolved', 'failed']) }))
        .filter((p) => p.pager && p.state);
      // The requester hears once that nobody answered and it went on-call.
      const escalated = steps.some((s) => s.action !== 'remind' && s.fired !== null);
      if (mine && escalatedSeen === false && escalated) {
        notice('escalated', (n) => {
          n.append(document.createTextNode("Nobody has answered your agent's request yet, so it went to the on-call reviewers: "),
            txt('code', 'plain', card.summary));
        });
      }
      escalatedSeen = escalated;
      const required = num(field(r, 'approvals_required')) || 1;
      const votes = arr(field(r, 'votes')).map(str);
      // By group, the approvals still needed from its members.
      const missing = arr(field(r, 'missing'))
        .map((m) => ({ group: str(field(m, 'group')), n: num(field(m, 'approvals')) }))
        .filter((m) => m.group && m.n);
      const counts = required > 1 || missing.length > 0;
      votesEl.textContent = counts
        ? votes.length + ' of ' + required + ' approvals' + (votes.length ? ': ' + votes.join(', ') : '') +
          (missing.length ? '; still needs ' + missing.map((m) => m.n + ' from ' + m.group).join(' and ') : '')
        : '';
      votesEl.hidden = !counts;
    };
    card.live(r);
    root.append(head);

    root.append(votesEl);
    root.append(rulesBlock(verdict));

    // A long command comes cut in the listing: the card fetches the whole
    // of it, and it cannot be approved until the reviewer can see it all
    // (and its hidden characters are counted over all of it).
    const commandArea = el('div', 'command-area');
    const showCommand = (text, cut) => {
      commandArea.replaceChildren();
      const hidden = countHidden(text, true);
      if (hidden > 0) {
        const w = el('div', 'warn hidden-chars');
        w.textContent = '\u26A0 This command contains ' + hidden + ' invisible, control or look-alike ' +
          (hidden === 1 ? 'character' : 'characters') + ', shown below as \u27E8U+\u2026\u27E9. ' +
          'They may make it look different elsewhere from what would run.';
        commandArea.append(w);
      }
      if (cut) {
        commandArea.append(el('div', 'warn partial', 'Loading the whole command (' +
          fmtInt(num(field(r, 'command_chars')) || 0) + ' characters) before it can be approved\u2026'));
      }
      commandArea.append(commandBlock(text));
    };
    showCommand(cmd, field(r, 'command_truncated') === true);
    root.append(commandArea);
    root.append(factsBlock(r));
    const anns = annotationsBlock(field(r, 'annotations'));
    if (anns) root.append(anns);

    // Actions.
    const actions = el('div', 'actions');
    const approve = button('Approve', 'approve');
    const deny = button('Deny', 'deny');
    actions.append(approve, deny);

    const confirm = el('div', 'confirm');
    confirm.hidden = true;
    confirm.append(el('p', null, 'This request is critical. Read the rules above and the whole command before you approve it.'));
    const reallyApprove = button('Approve this critical command', 'approve');
    const cancelApprove = button('Cancel', 'quiet');
    confirm.append(reallyApprove, cancelApprove);

    const denyForm = el('form', 'deny-form');
    denyForm.hidden = true;
    const reasonId = 'reason-' + (ID_RE.test(id) ? id : String(++anonymous));
    const label = el('label', null, 'Reason for denying (the agent sees it; recommended)');
    label.htmlFor = reasonId;
    const reason = document.createElement('input');
    reason.type = 'text';
    reason.id = reasonId;
    reason.className = 'reason-input';
    reason.maxLength = 2000;
    reason.autocomplete = 'off';
    reason.placeholder = 'e.g. not against production; use the staging database';
    const reallyDeny = button('Deny this request', 'deny', 'submit');
    const cancelDeny = button('Cancel', 'quiet');
    const row = el('div', 'deny-row');
    row.append(reason, reallyDeny, cancelDeny);
    denyForm.append(label, row);

    const msg = el('div', 'card-msg');
    msg.setAttribute('role', 'status');
    root.append(actions, confirm, denyForm, msg);

    const all = [approve, deny, reallyApprove, cancelApprove, reallyDeny, cancelDeny, reason];
    card.partial = field(r, 'command_truncated') === true;
    card.setBusy = (b) => {
      card.busy = b;
      for (const x of all) x.disabled = b || card.expired || card.malformed;
      approve.disabled = approve.disabled || card.partial;
      reallyApprove.disabled = reallyApprove.disabled || card.partial;
      root.classList.toggle('busy', b);
    };
    card.loadWhole = async () => {
      if (!card.partial || card.loadingWhole || card.malformed) return;
      card.loadingWhole = true;
      try {
        const res = await fetch('/api/requests/' + id, {
          headers: { Accept: 'application/json' },
          credentials: 'same-origin',
          cache: 'no-store',
          redirect: 'error',
        });
        if (!res.ok) throw new Error(String(res.status));
        const whole = await res.json();
        const text = str(field(whole, 'command'));
        if (str(field(whole, 'command_hash')) !== hash || field(whole, 'command_truncated') === true) {
          throw new Error('another command');
        }
        card.partial = false;
        showCommand(text, false);
        card.setBusy(card.busy);
        card.say(null);
      } catch (e) {
        card.say('The whole command could not be loaded, so it cannot be approved yet; retrying.', 'error');
      } finally {
        card.loadingWhole = false;
      }
    };
    card.say = (text, kind) => {
      msg.className = 'card-msg' + (kind ? ' msg-' + kind : '');
      msg.replaceChildren();
      if (text) put(msg, text, false);
    };

    card.malformed = !ID_RE.test(id) || !HASH_RE.test(hash);
    if (card.malformed) {
      card.say('This request is malformed (its id or command hash is not valid), so it cannot be decided here.', 'error');
    }

    approve.addEventListener('click', () => {
      denyForm.hidden = true;
      if (risk === 'critical') {
        confirm.hidden = false;
        reallyApprove.focus();
      } else {
        decide(card, true, null);
      }
    });
    reallyApprove.addEventListener('click', () => decide(card, true, null));
    cancelApprove.addEventListener('click', () => {
      confirm.hidden = true;
    });
    deny.addEventListener('click', () => {
      confirm.hidden = true;
      denyForm.hidden = false;
      reason.focus();
    });
    denyForm.addEventListener('submit', (e) => {
      e.preventDefault();
      decide(card, false, reason.value);
    });
    cancelDeny.addEventListener('click', () => {
      denyForm.hidden = true;
    });

    card.tick = (now) => {
      if (created !== null) age.textContent = 'waiting ' + dur(now - created);
      // The escalation: the steps taken so far and the next one's time.
      const did = { remind: 'reminded', notify: 'posted to the on-call channel', page: 'paged on-call' };
      const will = { remind: 'reminder', notify: 'on-call post', page: 'page' };
      const pagerName = { pagerduty: 'PagerDuty', opsgenie: 'Opsgenie' };
      const done = steps.filter((s) => s.fired !== null || s.due <= now).map((s) => did[s.action]);
      const next = steps.find((s) => s.fired === null && s.due > now);
      const parts = [];
      if (done.length) parts.push(done.join(', '));
      for (const p of pages) parts.push(pagerName[p.pager] + ' ' + (p.state === 'sending' ? 'paging' : p.state === 'failed' ? 'page refused' : 'incident ' + p.state));
      if (next) parts.push(will[next.action] + ' in ' + dur(next.due - now));
      escal.textContent = parts.join(' \u00B7 ');
      if (expires === null) {
        left.textContent = '';
        return;
      }
      const ms = expires - now;
      const wasExpired = card.expired;
      card.expired = ms <= 0;
      left.textContent = card.expired ? 'deadline passed: it expires as denied' : 'expires in ' + dur(ms);
      left.classList.toggle('soon', ms < 60000);
      if (card.expired !== wasExpired) card.setBusy(card.busy);
    };
    card.expired = false;
    card.setBusy(false);
    card.tick(Date.now() + clockOffset);
    card.loadWhole();
    return card;
  }

  function removeCard(card) {
    card.el.remove();
    cards.delete(card.id);
    updateCounts();
  }

  function describeDecision(into, summary, status, by, reason) {
    into.append(txt('code', 'plain', summary));
    into.append(document.createTextNode(' was ' + status));
    if (by) {
      into.append(document.createTextNode(' by '));
      into.append(txt('span', 'plain', by));
    }
    if (reason) {
      into.append(document.createTextNode(': '));
      into.append(txt('span', 'v', reason));
    }
  }

  async function decide(card, approve, reason) {
    if (card.busy || card.malformed) return;
    card.setBusy(true);
    card.say('');
    const url = '/api/requests/' + card.id + (approve ? '/approve' : '/deny');
    const note = typeof reason === 'string' && reason.trim() ? reason : null;
    let res;
    let body = null;
    try {
      res = await fetch(url, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', 'X-Holdpoint': '1' },
        body: JSON.stringify({ reason: note, command_hash: card.hash }),
        credentials: 'same-origin',
        cache: 'no-store',
        redirect: 'error',
      });
      try {
        body = await res.json();
      } catch (e) {
        body = null;
      }
    } catch (e) {
      card.setBusy(false);
      card.say('Could not reach the bot, so nothing was decided. Try again.', 'error');
      return;
    }
    if (res.status === 200) {
      const status = oneOf(field(body, 'status'), STATUSES) || (approve ? 'approved' : 'denied');
      card.decidedHere = true;
      removeCard(card);
      notice(status, (n) => {
        n.append(document.createTextNode('You ' + status + ' '));
        n.append(txt('code', 'plain', card.summary));
        n.append(document.createTextNode('.'));
      });
      refresh();
    } else if (res.status === 202) {
      // A vote: the request waits for more approvals.
      const v = field(body, 'voted');
      card.setBusy(false);
      card.say('Your approval is counted: ' + (num(field(v, 'approvals')) || 0) + ' of ' +
        (num(field(v, 'required')) || 0) + '. It runs once enough reviewers approve.');
      refresh();
    } else if (res.status === 409) {
      const status = oneOf(field(body, 'already'), STATUSES) || 'decided';
      card.decidedHere = true;
      removeCard(card);
      notice('conflict', (n) => {
        n.append(document.createTextNode('Someone decided first: '));
        describeDecision(n, card.summary, status, str(field(body, 'decided_by')), str(field(body, 'reason')));
      });
      refresh();
    } else if (res.status === 401) {
      loggedOut();
    } else if (res.status === 404) {
      card.decidedHere = true;
      removeCard(card);
      notice('conflict', (n) => n.append(document.createTextNode('That request no longer exists.')));
      refresh();
    } else {
      const why = str(field(body, 'refused')) || str(field(body, 'error')) || 'the bot answered ' + res.status;
      card.setBusy(false);
      card.say((res.status === 403 ? 'Refused: ' : 'Not decided: ') + why, 'error');
    }
  }

  // -------------------------------------------------------------- recent

  function renderRecent(list) {
    const rows = list.filter((r) => ID_RE.test(str(field(r, 'id'))));
    const key = rows.map((r) => str(field(r, 'id')) + ':' + str(field(r, 'status'))).join(',');
    recentById = new Map(rows.map((r) => [str(field(r, 'id')), r]));
    $('recent-empty').hidden = rows.length > 0;
    if (key === recentKey) return;
    recentKey = key;
    recentEl.replaceChildren();
    for (const r of rows) {
      const status = oneOf(field(r, 'status'), STATUSES) || 'unknown';
      const row = el('div', 'row status-' + status);
      row.dataset.id = str(field(r, 'id'));
      row.append(badge(status, 'status status-' + status));
      const cmd = str(field(r, 'command'));
      const preview = el('code', 'preview plain');
      put(preview, firstChars(cmd, 160), false);
      if (field(r, 'command_truncated') === true && Array.from(cmd).length <= 160) preview.append(el('span', 'cut', '…'));
      row.append(preview);
      const who = el('span', 'by');
      const by = str(field(r, 'decided_by'));
      who.append(document.createTextNode('by '), by ? txt('span', 'plain', by) : el('span', 'none', '—'));
      row.append(who);
      const created = num(field(r, 'created_at'));
      const decided = num(field(r, 'decided_at'));
      const when = el('span', 'when');
      if (created !== null && decided !== null) {
        when.textContent = 'after ' + dur(decided - created) + ' · ' + clock(decided);
      }
      row.append(when);
      const why = str(field(r, 'reason'));
      if (why) row.append(txt('span', 'why v', why));
      recentEl.append(row);
    }
  }

  // --------------------------------------------------------------- apply

  function updateCounts() {
    const n = cards.size;
    $('pending-count').textContent = n ? String(n) : '';
    $('pending-empty').hidden = n > 0;
    document.title = (n ? '(' + n + ') ' : '') + 'holdpoint · review queue';
  }

  function apply(data) {
    if (!isObj(data)) throw new Error('not an object');
    const now = num(field(data, 'now'));
    if (now !== null) clockOffset = now - Date.now();
    me = str(field(data, 'reviewer'));
    const who = $('who');
    who.replaceChildren();
    if (me) who.append(document.createTextNode('deciding as '), txt('span', 'plain', me));

    renderRecent(arr(field(data, 'recent')).filter(isObj));

    // What the listing leaves out: a runner with more waiting than it shows.
    const more = $('pending-more');
    more.replaceChildren();
    const cut = arr(field(data, 'runners')).filter(isObj).filter((q) => {
      const shown = num(field(q, 'shown'));
      const waiting = num(field(q, 'pending'));
      return shown !== null && waiting !== null && shown < waiting;
    });
    for (const q of cut) {
      const line = el('span', 'line');
      line.append(txt('span', 'plain', field(q, 'runner')), document.createTextNode(
        ' has ' + fmtInt(num(field(q, 'pending'))) + ' requests waiting; only ' + fmtInt(num(field(q, 'shown'))) +
        ' are shown here (`holdpoint-bot requests list --runner NAME` lists them all).'));
      more.append(line);
    }
    more.hidden = cut.length === 0;

    const seen = new Set();
    let prev = null;
    for (const r of arr(field(data, 'pending')).filter(isObj)) {
      const id = str(field(r, 'id'));
      if (seen.has(id)) continue;
      seen.add(id);
      let card = cards.get(id);
      if (!card) {
        card = buildCard(r);
        cards.set(id, card);
      } else {
        card.live(r);
        if (card.partial) card.loadWhole();
      }
      const want = prev ? prev.el.nextSibling : pendingEl.firstChild;
      if (card.el !== want) pendingEl.insertBefore(card.el, want);
      prev = card;
    }
    for (const card of Array.from(cards.values())) {
      if (seen.has(card.id)) continue;
      removeCard(card);
      // A decision in flight from this page says itself how it ended.
      if (card.decidedHere || card.busy) continue;
      const r = recentById.get(card.id);
      const status = oneOf(field(r, 'status'), STATUSES);
      notice(status || 'conflict', (n) => {
        if (status) {
          if (card.mine) n.append(document.createTextNode("Your agent's request "));
          describeDecision(n, card.summary, status, str(field(r, 'decided_by')), str(field(r, 'reason')));
        } else {
          n.append(txt('code', 'plain', card.summary), document.createTextNode(' is no longer waiting.'));
        }
      });
    }
    updateCounts();
    if (firstLoad) {
      firstLoad = false;
      showTarget();
    }
  }

  function showTarget() {
    const id = location.hash.slice(1);
    if (!ID_RE.test(id)) return;
    const card = cards.get(id);
    for (const c of cards.values()) c.el.classList.toggle('target', c === card);
    if (card) card.el.scrollIntoView({ block: 'start' });
  }

  // ----------------------------------------------------------- load, live

  let loading = false;
  let again = false;

  async function load() {
    let res;
    try {
      res = await fetch('/api/requests', {
        headers: { Accept: 'application/json' },
        credentials: 'same-origin',
        cache: 'no-store',
        redirect: 'error',
      });
    } catch (e) {
      setConn('down', 'offline');
      banner('Cannot reach the bot; retrying every few seconds. Nothing can be decided until it answers.');
      return;
    }
    if (res.status === 401) {
      loggedOut();
      return;
    }
    if (!res.ok) {
      banner('The bot answered ' + res.status + ' when asked for the queue; retrying.');
      return;
    }
    try {
      apply(await res.json());
      banner(null);
    } catch (e) {
      banner('The bot sent a queue this page cannot read; retrying.');
    }
  }

  async function refresh() {
    if (stopped) return;
    if (loading) {
      again = true;
      return;
    }
    loading = true;
    try {
      do {
        again = false;
        await load();
      } while (again && !stopped);
    } finally {
      loading = false;
    }
  }

  function connect() {
    if (stopped || typeof EventSource !== 'function') return;
    const es = new EventSource('/api/events');
    events = es;
    es.addEventListener('open', () => {
      setConn('live', 'live');
      refresh();
    });
    for (const name of ['submitted', 'decided', 'changed']) {
      es.addEventListener(name, () => refresh());
    }
    es.addEventListener('error', () => {
      if (stopped) return;
      setConn('wait', 'reconnecting…');
      if (es.readyState === EventSource.CLOSED) {
        events = null;
        setTimeout(connect, RECONNECT_MS);
      }
    });
  }

  function loggedOut() {
    if (stopped) return;
    stopped = true;
    if (events) events.close();
    setConn('down', 'logged out');
    for (const card of Array.from(cards.values())) removeCard(card);
    recentEl.replaceChildren();
    bannerEl.hidden = false;
    bannerEl.replaceChildren(
      document.createTextNode('Your session has ended. Make a new login link on the bot\u2019s machine with '),
      el('code', null, 'holdpoint-bot login-link'),
      document.createTextNode(' and open it.'),
    );
  }

  async function logout() {
    try {
      await fetch('/api/logout', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', 'X-Holdpoint': '1' },
        body: '{}',
        credentials: 'same-origin',
        cache: 'no-store',
      });
    } catch (e) {
      // Reloading shows whether the session is gone.
    }
    location.assign('/');
  }

  function start() {
    pendingEl = $('pending');
    recentEl = $('recent');
    noticesEl = $('notices');
    bannerEl = $('banner');
    connEl = $('conn');
    $('logout').addEventListener('click', logout);
    window.addEventListener('hashchange', showTarget);
    updateCounts();
    refresh();
    connect();
    setInterval(refresh, REFRESH_MS);
    setInterval(() => {
      const now = Date.now() + clockOffset;
      for (const c of cards.values()) c.tick(now);
    }, 1000);
  }

  if (document.readyState === 'loading') {
    document.addEventListener('DOMContentLoaded', start);
  } else {
    start();
  }
})();
