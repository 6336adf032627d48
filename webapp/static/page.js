// Marks are sent as soon as they are made (the refine form carries them too, so the page works without this).
document.querySelectorAll('.card input[type=radio]').forEach(function (radio) {
  radio.addEventListener('change', function () {
    var card = radio.closest('.card');
    card.classList.remove('relevant', 'irrelevant');
    if (radio.value !== 'none') card.classList.add(radio.value);
    fetch('/mark', {method: 'POST', body: new URLSearchParams({name: card.dataset.name, value: radio.value})})
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (d) {
        if (d) document.getElementById('marked').textContent =
          d.relevant + ' marked relevant, ' + d.irrelevant + ' irrelevant so far';
      });
  });
});
var person = document.getElementById('person');
if (person) person.addEventListener('keydown', function (event) {
  if (event.key === 'Enter') { event.preventDefault(); document.getElementById('learn').click(); }
});
document.querySelectorAll('button.danger').forEach(function (button) {
  button.addEventListener('click', function (event) {
    if (!confirm('Remove ' + button.value + ' from the gallery?')) event.preventDefault();
  });
});
