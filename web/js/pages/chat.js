// The chat: a conversation with the agent in one session. A turn's reply streams in as
// it is generated; tool calls appear as cards paired with their results; a turn can be
// stopped; the session can be rated. After a reload during a running turn, the page
// follows the turn through the session's event feed until it ends.

import { api, apiPath, streamTurn } from '../api.js';
import { h, clear, field, button, act, showError, showNotice, clearNotice, pre } from '../dom.js';
import { href, replaceQuietly } from '../router.js';
import { skillLink, toolCallView, toolResultView } from '../events.js';
import { number, count, duration, stopReason, time } from '../format.js';
import { uploadToWorkspace, acceptDrops } from '../upload.js';

// Builds the conversation from events, one at a time, whether they come from the stored
// trajectory, a streamed turn or the event feed.
function createConversation(log) {
  const cards = new Map();
  let live = null;
  let lastTurnEnd = null;
  let userTurns = 0;

  const nearBottom = () => window.innerHeight + window.scrollY >= document.documentElement.scrollHeight - 80;
  const add = (element) => {
    const follow = nearBottom();
    log.append(element);
    if (follow) window.scrollTo(0, document.documentElement.scrollHeight);
    return element;
  };
  const message = (role, text, extra = '') =>
    h('div', { class: `message ${role} ${extra}`.trim(), testid: `${role}-message` }, h('div', { class: 'message-role', text: role === 'user' ? 'You' : 'Agent' }), h('div', { class: 'message-text', text }));

  const dropLive = () => {
    if (live) live.remove();
    live = null;
  };

  function addEvent(stored) {
    const kind = stored.kind || (stored.payload && stored.payload.type);
    const payload = stored.payload || {};
    switch (kind) {
      case 'user_message':
        userTurns += 1;
        add(message('user', payload.text));
        break;
      case 'skill_read':
        add(h('p', { class: 'chat-note', testid: 'skill-read' }, 'Read skill ', skillLink(payload.slug, payload.version)));
        break;
      case 'model_output':
        // Text that came with tool calls was not an answer; the calls show as cards.
        if ((payload.tool_calls || []).length) dropLive();
        break;
      case 'tool_call': {
        const body = h('div', { class: 'tool-body' }, toolCallView(payload.name, payload.arguments));
        const pending = h('p', { class: 'tool-status pending', text: 'running…' });
        const element = add(h('div', { class: 'tool-card', testid: 'tool-card', dataset: { tool: payload.name, callId: payload.call_id } }, h('div', { class: 'tool-name' }, h('code', { text: payload.name })), body, pending));
        cards.set(payload.call_id, { element, pending });
        break;
      }
      case 'tool_result': {
        const known = cards.get(payload.call_id);
        if (known) {
          known.pending.replaceWith(toolResultView(payload));
          cards.delete(payload.call_id);
        } else {
          add(h('div', { class: 'tool-card', testid: 'tool-card', dataset: { tool: payload.name } }, h('div', { class: 'tool-name' }, h('code', { text: payload.name })), toolResultView(payload)));
        }
        break;
      }
      case 'compaction':
        add(h('p', { class: 'chat-note', text: `Earlier messages were summarized to fit the model's context (${number(payload.replaced_messages)} replaced).` }));
        break;
      case 'step_rejected':
        add(h('div', { class: 'chat-note warn' }, h('p', { text: `A step was set aside: ${payload.reason}` }), payload.text ? pre(payload.text) : null));
        break;
      case 'final_answer':
        dropLive();
        add(message('assistant', payload.text));
        break;
      case 'stop': {
        if (live) {
          // What was streamed before the turn stopped stays visible, marked as cut short.
          live.classList.remove('streaming');
          live.classList.add('partial');
          live = null;
        }
        const text = `Turn ended: ${stopReason(payload.reason)}${payload.detail ? ` — ${payload.detail}` : ''}`;
        lastTurnEnd = add(h('p', { class: `turn-end ${payload.reason === 'final_answer' ? '' : 'warn'}`.trim(), testid: 'turn-end', dataset: { stopReason: payload.reason } }, h('span', { text })));
        break;
      }
      default:
        // Model calls and the files a turn touched belong to the trajectory view.
        break;
    }
  }

  function addDelta(text) {
    if (!live) live = add(message('assistant', '', 'streaming'));
    live.querySelector('.message-text').append(text);
    if (nearBottom()) window.scrollTo(0, document.documentElement.scrollHeight);
  }

  // The turn's totals from the stream's `done`, added to its end marker.
  function finish(done) {
    if (done.error) {
      showError(done.error);
      add(h('p', { class: 'turn-end error', testid: 'turn-end', dataset: { stopReason: 'error' }, text: `The turn failed: ${done.error}` }));
      return;
    }
    if (!lastTurnEnd) addEvent({ kind: 'stop', payload: { reason: done.stop_reason } });
    const usage = done.usage || {};
    lastTurnEnd.append(h('span', { class: 'turn-stats', text: ` · ${count(done.steps, 'step')} · ${count(usage.total_tokens, 'token')} · ${duration(done.elapsed_ms)}` }));
  }

  return {
    addEvent,
    addDelta,
    finish,
    beginTurn() {
      lastTurnEnd = null;
      dropLive();
    },
    reset() {
      clear(log);
      cards.clear();
      live = null;
      lastTurnEnd = null;
      userTurns = 0;
    },
    turns: () => userTurns,
  };
}

function feedbackItem(entry) {
  const up = entry.rating === 'up';
  return h(
    'li',
    { class: 'feedback-item', testid: 'feedback-item', dataset: { rating: entry.rating } },
    h('span', { class: `badge ${up ? 'ok' : 'error'}`, text: up ? '▲ Helpful' : '▼ Not helpful' }),
    h('span', { class: 'feedback-comment', text: entry.comment || '(no comment)' }),
    h('span', { class: 'muted', text: `${entry.turn ? `turn ${entry.turn} · ` : ''}${time(entry.created_at)}` }),
  );
}

export async function render(ctx) {
  const { root, params, signal } = ctx;
  let sessionId = params.id || null;
  let session = sessionId ? await api.get(apiPath('api', 'sessions', sessionId), { signal }) : null;
  let running = false;
  let eventFeed = null;

  const title = h('h1', { testid: 'chat-title', text: session ? session.title : 'New chat' });
  const trajectoryLink = h('a', { href: '#', testid: 'trajectory-link', hidden: !session }, 'Trajectory');
  const header = h('div', { class: 'page-header' }, title, h('div', { class: 'page-actions' }, trajectoryLink, h('a', { href: '#/chat', testid: 'new-chat' }, 'New chat')));

  const log = h('div', { class: 'chat-log', testid: 'chat-log' });
  const conversation = createConversation(log);
  const empty = h('p', { class: 'muted chat-empty', text: 'Ask the agent to do something in your workspace. Drop files on this page to add them to it.' });

  const input = h('textarea', { rows: 3, name: 'content', testid: 'chat-input', placeholder: 'Message the agent…', required: true });
  const send = h('button', { type: 'submit', class: 'primary', testid: 'send' }, 'Send');
  const stop = button('Stop', () => act(null, stopTurn), { testid: 'stop', class: 'danger', disabled: true });
  const fileInput = h('input', { type: 'file', multiple: true, testid: 'attach-file' });
  // A new session may start from an empty workspace: the files earlier sessions left are
  // removed first (the user is asked to confirm in the browser's own dialog).
  const clean = h('input', { type: 'checkbox', name: 'clean', testid: 'clean-workspace' });
  const cleanField = h('label', { class: 'field checkbox', hidden: Boolean(session) }, clean, ' Start from a clean workspace');
  const composer = h(
    'form',
    { class: 'composer card', testid: 'composer' },
    field('Message', input),
    cleanField,
    h('div', { class: 'composer-actions' }, field('Attach files', fileInput), h('div', { class: 'buttons' }, stop, send)),
  );

  const comment = h('textarea', { rows: 2, name: 'comment', testid: 'feedback-comment' });
  const feedbackList = h('ul', { class: 'feedback-list', testid: 'feedback-list' });
  const up = button('▲ Helpful', () => act(up, () => rate('up')), { testid: 'thumbs-up', 'aria-label': 'Thumbs up: helpful' });
  const down = button('▼ Not helpful', () => act(down, () => rate('down')), { testid: 'thumbs-down', 'aria-label': 'Thumbs down: not helpful' });
  const feedback = h(
    'section',
    { class: 'card feedback', testid: 'feedback', hidden: !session },
    h('h2', { text: 'Rate this session' }),
    field('Comment (optional)', comment),
    h('div', { class: 'buttons' }, up, down),
    feedbackList,
  );

  root.append(header, log, composer, feedback);
  root.classList.add('chat-page');

  function showSession() {
    title.textContent = session.title;
    trajectoryLink.href = href(`/sessions/${encodeURIComponent(session.id)}`);
    trajectoryLink.hidden = false;
    feedback.hidden = false;
  }

  function setRunning(value) {
    // "Stopping the turn…" is over once the turn is.
    if (running && !value) clearNotice();
    running = value;
    root.dataset.running = String(value);
    stop.disabled = !value;
    send.disabled = value;
  }

  async function loadConversation() {
    const { events } = await api.get(apiPath('api', 'sessions', sessionId, 'trajectory'), { signal });
    conversation.reset();
    events.forEach((event) => conversation.addEvent(event));
    if (!events.length) log.append(empty);
    return events.length ? events[events.length - 1].seq : 0;
  }

  async function loadFeedback() {
    const { feedback: entries } = await api.get(apiPath('api', 'sessions', sessionId, 'feedback'), { signal });
    feedbackList.replaceChildren(...entries.map(feedbackItem));
  }

  async function rate(rating) {
    const body = { rating };
    if (comment.value.trim()) body.comment = comment.value.trim();
    if (conversation.turns() > 0) body.turn = conversation.turns();
    await api.post(apiPath('api', 'sessions', sessionId, 'feedback'), body);
    comment.value = '';
    await loadFeedback();
    showNotice('Thanks: your rating is saved.');
  }

  async function stopTurn() {
    await api.post(apiPath('api', 'sessions', sessionId, 'cancel'));
    showNotice('Stopping the turn…');
  }

  // Follows a turn that runs without this page having started it (the page was
  // reloaded, or the turn started elsewhere): the feed sends each stored event after
  // `after`, then `end` once no turn runs, and the conversation is read again.
  function follow(after) {
    setRunning(true);
    const source = new EventSource(`${apiPath('api', 'sessions', sessionId, 'events')}?after=${encodeURIComponent(after)}`);
    eventFeed = source;
    source.addEventListener('event', (message) => {
      try {
        conversation.addEvent(JSON.parse(message.data));
      } catch {
        // A frame that is not JSON is not an event; the reload at the end shows the truth.
      }
    });
    source.addEventListener('end', () => {
      source.close();
      eventFeed = null;
      setRunning(false);
      if (ctx.isCurrent()) act(null, loadConversation);
    });
    source.addEventListener('error', () => {
      // The browser reconnects by itself (resuming after the last event id); only a
      // feed it has given up on needs saying.
      if (source.readyState === EventSource.CLOSED && eventFeed === source) {
        eventFeed = null;
        setRunning(false);
        showError('Lost the connection to the running turn. Reload the page to see how it went.');
      }
    });
  }
  signal.addEventListener('abort', () => {
    if (eventFeed) eventFeed.close();
  });

  async function sendMessage(text) {
    if (!sessionId) {
      if (clean.checked) {
        if (!window.confirm('Remove every file in your workspace before this chat starts?')) return;
        await api.del('/api/workspace/files');
      }
      cleanField.hidden = true;
      session = await api.post('/api/sessions', { title: text.slice(0, 60) });
      sessionId = session.id;
      replaceQuietly(`/chat/${encodeURIComponent(sessionId)}`);
      showSession();
    }
    empty.remove();
    setRunning(true);
    conversation.beginTurn();
    let finished = false;
    try {
      await streamTurn(
        sessionId,
        { content: text },
        (name, value) => {
          if (name === 'delta' && typeof value.text === 'string') conversation.addDelta(value.text);
          else if (name === 'event') conversation.addEvent(value);
          else if (name === 'done') {
            finished = true;
            conversation.finish(value);
          }
        },
        signal,
      );
      if (!finished) showError('The connection ended before the turn did. Reload the page to see how it went.');
    } catch (error) {
      if (error.name === 'AbortError') return;
      if (!finished && input.value === '') input.value = text;
      throw error;
    } finally {
      if (ctx.isCurrent()) setRunning(false);
    }
  }

  composer.addEventListener('submit', (event) => {
    event.preventDefault();
    const text = input.value.trim();
    if (!text || running) return;
    input.value = '';
    act(null, () => sendMessage(text));
  });
  input.addEventListener('keydown', (event) => {
    // Enter sends; Shift+Enter starts a new line.
    if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      composer.requestSubmit();
    }
  });

  const uploadAll = (fileList) =>
    act(null, async () => {
      for (const file of fileList) {
        await uploadToWorkspace(file);
        showNotice(`Uploaded ${file.name} to your workspace.`);
      }
    });
  fileInput.addEventListener('change', () => {
    uploadAll(Array.from(fileInput.files)).then(() => {
      fileInput.value = '';
    });
  });
  acceptDrops(root, uploadAll);

  if (!session) {
    log.append(empty);
    setRunning(false);
    root.dataset.ready = 'true';
    return;
  }
  showSession();
  const lastSeq = await loadConversation();
  await loadFeedback();
  if (session.status === 'running') follow(lastSeq);
  else setRunning(false);
  root.dataset.ready = 'true';
}
