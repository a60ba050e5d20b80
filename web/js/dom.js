// Small helpers for building the page out of elements. Every piece of text goes in as a
// text node, never as markup, so that nothing a user, a model or a tool wrote can become
// HTML on this page.

// Creates an element. `attrs` may hold:
//   class, text, testid, dataset (an object), on (an object of event handlers),
//   and any other attribute, set with setAttribute (false and null leave it out,
//   true sets it empty).
// Children may be strings, numbers, nodes, arrays of those, or null (skipped).
export function h(tag, attrs = {}, ...children) {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') element.className = value;
    else if (key === 'text') element.textContent = value;
    else if (key === 'testid') element.dataset.testid = value;
    else if (key === 'dataset') Object.assign(element.dataset, value);
    else if (key === 'on') {
      for (const [event, handler] of Object.entries(value)) element.addEventListener(event, handler);
    } else if (key === 'value' || key === 'checked' || key === 'disabled' || key === 'open' || key === 'selected') {
      element[key] = value;
    } else element.setAttribute(key, value === true ? '' : String(value));
  }
  append(element, children);
  return element;
}

export function append(parent, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    parent.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return parent;
}

export function clear(element) {
  element.replaceChildren();
  return element;
}

// A labelled form field: the label names the control, so that screen readers and
// keyboard users get the same form as everyone else.
let fieldCounter = 0;
export function field(labelText, control, hint) {
  fieldCounter += 1;
  if (!control.id) control.id = `field-${fieldCounter}`;
  return h('div', { class: 'field' }, h('label', { for: control.id, text: labelText }), control, hint ? h('p', { class: 'hint', text: hint }) : null);
}

export function button(text, onClick, attrs = {}) {
  return h('button', { type: 'button', ...attrs, on: { click: onClick } }, text);
}

// A page heading with optional content on its right (actions, badges).
export function pageHeader(title, ...aside) {
  return h('div', { class: 'page-header' }, h('h1', { text: title }), aside.length ? h('div', { class: 'page-actions' }, aside) : null);
}

export function badge(text, kind = '') {
  return h('span', { class: `badge ${kind}`.trim(), text });
}

// Description list of label/value pairs; values that are null or empty are left out.
export function facts(pairs, attrs = {}) {
  const list = h('dl', { class: 'facts', ...attrs });
  for (const [label, value] of pairs) {
    if (value === null || value === undefined || value === '') continue;
    list.append(h('dt', { text: label }), h('dd', {}, value instanceof Node ? value : String(value)));
  }
  return list;
}

export function pre(text, attrs = {}) {
  return h('pre', attrs, h('code', { text: text ?? '' }));
}

// A card: a titled section.
export function card(title, ...children) {
  return h('section', { class: 'card' }, title ? h('h2', { text: title }) : null, children);
}

// Messages for the user: errors in the alert area (role="alert"), other news in the
// status area (role="status").
export function showError(error) {
  const area = document.getElementById('status');
  const message = typeof error === 'string' ? error : error && error.message ? error.message : 'Something went wrong.';
  area.textContent = message;
  area.hidden = false;
}

export function showNotice(message) {
  const area = document.getElementById('notice');
  area.textContent = message;
  area.hidden = false;
}

// A notice to show on the next page, for actions that end by going somewhere else
// (a rollback that opens the new latest version).
let flashed = null;
export function flash(message) {
  flashed = message;
}

export function clearNotice() {
  const area = document.getElementById('notice');
  area.textContent = '';
  area.hidden = true;
}

export function clearMessages() {
  for (const id of ['status', 'notice']) {
    const area = document.getElementById(id);
    area.textContent = '';
    area.hidden = true;
  }
  if (flashed) showNotice(flashed);
  flashed = null;
}

// Runs an action from a button, disabling the button while it runs and showing any
// failure in the alert area.
export async function act(control, action) {
  const wasDisabled = control ? control.disabled : false;
  if (control) control.disabled = true;
  try {
    return await action();
  } catch (error) {
    if (error.name !== 'AbortError') showError(error);
    return undefined;
  } finally {
    if (control && control.isConnected) control.disabled = wasDisabled;
  }
}
