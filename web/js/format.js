// How numbers, sizes, durations and times are written on the page.

const numberFormat = new Intl.NumberFormat('en');

export function number(value) {
  return value === null || value === undefined ? '–' : numberFormat.format(value);
}

// "1 step", "3 steps".
export function count(value, noun) {
  return `${number(value)} ${noun}${value === 1 ? '' : 's'}`;
}

export function bytes(value) {
  if (value === null || value === undefined) return '–';
  if (value < 1024) return `${value} B`;
  if (value < 1024 * 1024) return `${(value / 1024).toFixed(1)} KiB`;
  return `${(value / 1024 / 1024).toFixed(1)} MiB`;
}

export function duration(ms) {
  if (ms === null || ms === undefined) return '–';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const seconds = ms / 1000;
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  const minutes = Math.floor(seconds / 60);
  return `${minutes} min ${Math.round(seconds - minutes * 60)} s`;
}

// Times come as ISO text (sessions, tokens, users), milliseconds (skills) or seconds
// (evolver runs); `unit` says which for numbers.
export function time(value, unit = 'ms') {
  if (value === null || value === undefined || value === '') return '–';
  const date = typeof value === 'number' ? new Date(unit === 's' ? value * 1000 : value) : new Date(value);
  if (Number.isNaN(date.getTime())) return String(value);
  return date.toLocaleString('en-GB', { year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit' });
}

// The first line of a text, cut to `max` characters, for one-line summaries.
export function preview(text, max = 90) {
  const line = String(text ?? '').replace(/\s+/g, ' ').trim();
  return line.length > max ? `${line.slice(0, max - 1)}…` : line;
}

// Stop reasons as words.
const STOP_REASONS = {
  final_answer: 'answered',
  max_steps: 'step limit reached',
  max_wall_time: 'time limit reached',
  token_budget: 'token budget reached',
  error: 'error',
  cancelled: 'cancelled',
  repeated_calls: 'stopped repeating calls',
  cut_off: 'replies cut off',
};

export function stopReason(reason) {
  if (!reason) return '–';
  const words = STOP_REASONS[reason];
  return words && words !== reason ? `${words} (${reason})` : reason;
}
