"""Built-in passages for ``multidoc_qa``: 40 short factual texts about invented places, people and things.

Written for this project (public domain), so an answer can never come from a model's memory. Kept apart from
the task generators in ``tasks.py`` (which re-exports ``public_domain_passages``) because they are data.
"""

from __future__ import annotations


def public_domain_passages() -> list[tuple[str, str]]:
    """40 short (120-150 words) factual passages about invented places, people and things, written for
    this project (so answers cannot come from model memory); (title, text) pairs for ``multidoc_qa``."""
    return list(_PASSAGES)


_PASSAGES: tuple[tuple[str, str], ...] = (
    (
        "Varnholt",
        "Varnholt is a small river town in the fictional province of Eskamere, founded in 1612 by a guild"
        " of rope makers who needed fresh water for soaking hemp. The town grew around a single stone "
        "quay on the river Lisk, and for two centuries nearly every family worked in the rope walks that "
        "lined the eastern bank. In 1788 a flood destroyed most of the walks, and the town turned to "
        "brewing, using the same river water. The Varnholt brewery, opened by Mathilde Oorsen in 1791, "
        "still operates in the old customs house. Today the town has about four thousand residents, a "
        "market every Thursday, and a rope museum that displays a forty-metre cable made for a ship that "
        "was never built. Visitors often remark on the narrow lanes, which were laid out to match the "
        "length of the old rope walks.",
    ),
    (
        "Edda Lindqvar",
        "Edda Lindqvar was a surveyor and mapmaker born in 1843 in the harbour village of Skellmouth. She"
        " trained under her uncle, a customs officer, and produced her first coastal chart at the age of "
        "nineteen. Her most famous work, the Lindqvar Atlas of the Northern Shoals, took eleven years to "
        "complete and charted more than three hundred sandbanks that had sunk dozens of fishing boats. "
        "Lindqvar insisted on taking soundings herself, rowing a small boat called the Patience across "
        "the shoals in every season. She never married and lived with her sister Runa in a narrow house "
        "above the harbour. After her death in 1911 the village placed a brass compass rose in the paving"
        " outside her door. Her original field notebooks, written in a private shorthand, were only fully"
        " deciphered in 1974.",
    ),
    (
        "The Brisk Heron",
        "The Brisk Heron was a three-masted merchant schooner launched in 1867 from the Caddow yards. She"
        " was built for the salt trade and could carry nearly two hundred tonnes in her hold. Her first "
        "captain, Ambrose Tull, was known for refusing to sail on Fridays, a habit that cost the owners "
        "several profitable contracts. In 1879 the Brisk Heron was caught in a storm off Cape Merrow and "
        "lost her mainmast, but the crew rigged a spar from a broken yard and brought her safely into "
        "port nine days later. The ship was converted into a training vessel for cadets in 1894 and spent"
        " her final years moored at Caddow as a floating classroom. She was broken up in 1923, and her "
        "figurehead, a carved heron with outstretched wings, hangs in the Caddow maritime hall.",
    ),
    (
        "Qell Island",
        "Qell Island lies twelve kilometres off the coast of the fictional Bay of Orrin and covers "
        "roughly nine square kilometres. The island is mostly heath and low cliffs, with a single "
        "freshwater spring on its western side. A community of about sixty people lives in the hamlet of "
        "Tavish, where they keep sheep and harvest seaweed for fertiliser. The island has no cars; "
        "supplies arrive twice a week on a flat-bottomed ferry called the Margit. Qell is known among "
        "birdwatchers for its colony of grey-backed terns, which nest on the northern cliffs from April "
        "to August. In 1952 a lighthouse keeper named Orvald Preece recorded the colony in a series of "
        "sketches that are now kept in the island's one-room school. The islanders hold a wool fair every"
        " September that draws visitors from the mainland.",
    ),
    (
        "Tobias Wrenfield",
        "Tobias Wrenfield was a clockmaker who worked in the market town of Haverleigh between 1820 and "
        "1866. He is remembered for the Haverleigh Tower Clock, which he designed with a pendulum nearly "
        "five metres long so that it would keep time through the cold winters. Wrenfield trained seven "
        "apprentices, three of whom later opened workshops in neighbouring towns. He kept meticulous "
        "account books listing every repair he ever made, including the names of customers and the fees "
        "charged. These books show that he often waived payment for widows and schoolteachers. In his "
        "later years Wrenfield experimented with clocks driven by falling water rather than weights, but "
        "none of the prototypes survived. His workshop on Cinder Lane was turned into a bakery in 1902, "
        "though the original bench remains inside.",
    ),
    (
        "Lake Moraskin",
        "Lake Moraskin is a glacial lake in the fictional Harl Mountains, lying at an altitude of about "
        "1,400 metres. It is roughly six kilometres long and reaches a depth of ninety metres near its "
        "northern end. The lake freezes every winter, and for centuries the villagers of Moraskin crossed"
        " the ice with sledges to reach the pastures on the far shore. A wooden chapel stands on a small "
        "island in the middle of the lake and can only be reached by boat in summer. Local fishermen "
        "catch a pale char that is found in no other lake in the range. In 1931 a hydroelectric dam was "
        "proposed at the outlet, but a petition signed by every household in the valley led to the plan "
        "being abandoned. The lake is now a protected area with a single hiking trail along the eastern "
        "shore.",
    ),
    (
        "Pellworth Academy",
        "Pellworth Academy is a boarding school founded in 1858 by the merchant Josiah Pellworth, who "
        "wanted the sons and daughters of dock workers to receive the same education as the children of "
        "ship owners. The school occupies a former grain warehouse on the edge of the port city of "
        "Donmere. Its first headmistress, Clara Voss, introduced lessons in navigation, bookkeeping and "
        "botany, an unusual combination at the time. The academy admitted girls from its opening year and"
        " was among the first schools in the region to do so. A large greenhouse built in 1884 still "
        "supplies vegetables to the school kitchen. Former pupils include the engineer Halvard Stroud and"
        " the poet Ines Marrow. The academy motto, carved above the main door, reads: Learn the tide "
        "before you sail.",
    ),
    (
        "Doverack Bridge",
        "Doverack Bridge crosses the river Fenn in the fictional county of Ashby and was completed in "
        "1749 after nine years of construction. It has seven stone arches, the widest spanning nearly "
        "twenty-two metres, and was for many years the longest bridge in the county. The bridge was paid "
        "for by a toll of one penny per cart, collected from a small house at its southern end until "
        "1871. During the great frost of 1795 the river froze so thickly that traders set up stalls on "
        "the ice beneath the arches. The bridge was widened in 1902 to carry a tramway, and the original "
        "parapets were moved to the outer edges of the new deck. A carved stone on the central pier "
        "records the names of the four masons who built it.",
    ),
    (
        "Ilse Moravec",
        "Ilse Moravec was a botanist born in 1889 in the mountain village of Dravnik. She spent most of "
        "her career cataloguing the mosses and lichens of the high valleys, travelling on foot with a "
        "pack mule and a wooden press for drying specimens. Over forty years she collected more than "
        "twelve thousand samples, many of them from slopes that no scientist had visited before. Moravec "
        "described sixty-three new species and named one of them after her mule, Bertold. She taught at "
        "the agricultural college in Halsk and was known for taking her students on week-long expeditions"
        " in all weathers. Her herbarium, stored in two hundred oak cabinets, was donated to the college "
        "after her death in 1962. A footpath above Dravnik now bears her name.",
    ),
    (
        "Corrin Vale Railway",
        "The Corrin Vale Railway was a narrow-gauge line built in 1881 to carry slate from the quarries "
        "of Corrin Vale down to the harbour at Pennock. The line was fourteen kilometres long and "
        "descended more than three hundred metres, so the loaded wagons ran downhill by gravity while "
        "horses pulled the empty ones back up. Steam locomotives were introduced in 1893, and the two "
        "engines, named Ferric and Tansy, served the line for over fifty years. Passenger services began "
        "in 1897, using two open carriages with wooden benches. The quarries closed in 1948 and the line "
        "was abandoned soon afterwards. Volunteers restored four kilometres of track in the 1980s, and "
        "Tansy, rebuilt from original drawings, now carries visitors on summer weekends.",
    ),
    (
        "Halden Marsh",
        "Halden Marsh is a tidal wetland of about eighteen square kilometres on the estuary of the "
        "fictional river Ouse-Marrin. The marsh is crossed by a network of drainage channels dug by monks"
        " in the thirteenth century to create salt pans. When salt making ended in the 1600s, the "
        "channels silted up and the area returned to reed beds. The marsh is home to otters, marsh "
        "harriers and a rare species of wading bird known locally as the stilt-legged plover. A timber "
        "boardwalk, built in 1998, lets visitors walk two kilometres into the reeds without disturbing "
        "the nesting birds. Every autumn, reed cutters harvest part of the marsh for thatching, using the"
        " same curved blades their great-grandparents used. The old monastery salt store now serves as a "
        "visitor centre.",
    ),
    (
        "Marek Solvang",
        "Marek Solvang was a violin maker who worked in the city of Trask from 1901 until his death in "
        "1958. He built about three hundred and forty instruments, each labelled with a small paper slip "
        "bearing a drawing of a fir tree. Solvang believed that wood from trees grown on north-facing "
        "slopes produced a warmer tone, and he travelled every spring to the forests of Upper Vell to "
        "select his timber. He varnished his instruments with a recipe that included linseed oil and the "
        "resin of a mountain pine, a formula he never wrote down. Several of his violins are played in "
        "the Trask Civic Orchestra. His workshop was preserved by his daughter Agnes, who continued to "
        "repair instruments there until 1985. The tools still hang on the wall in the order he left them.",
    ),
    (
        "Osterby Mill",
        "Osterby Mill is a tower windmill built in 1803 on a low ridge above the village of Osterby. It "
        "has five storeys of brick and a wooden cap that turns to face the wind. For most of the "
        "nineteenth century the mill ground wheat and barley for the surrounding farms, producing up to "
        "three tonnes of flour a day in good weather. In 1887 a lightning strike set fire to the sails, "
        "and the miller, Jonas Brekke, rebuilt them within a month using timber from his own orchard. The"
        " mill stopped working commercially in 1934 but was restored by a village trust in 1979. It now "
        "grinds flour on the first Sunday of every month, and the flour is sold in the village shop. From"
        " the top floor, visitors can see the spires of four neighbouring parishes.",
    ),
    (
        "Sarnia Kell",
        "Sarnia Kell was a long-distance swimmer from the fishing town of Brae Harnish. In 1927, at the "
        "age of twenty-three, she became the first person to swim across the Strait of Velloch, a "
        "distance of thirty-one kilometres, in a time of fourteen hours and six minutes. She trained in "
        "the cold harbour waters every morning before working in her family's net loft. Her crossing was "
        "accompanied by a rowing boat crewed by her two brothers, who fed her warm tea and oatcakes "
        "through a long pole. Kell made four more crossings over the next decade and later coached young "
        "swimmers at the town baths. A bronze statue of her stands at the end of the harbour wall, facing"
        " the strait. The town holds a swimming race in her honour every August.",
    ),
    (
        "Fennimore Glassworks",
        "The Fennimore Glassworks was founded in 1834 by the brothers Edwin and Lucas Fennimore in the "
        "valley town of Greywater. The works produced bottles, window panes and, later, decorative glass "
        "lamps that were sold across the country. At its height in the 1890s the factory employed over "
        "six hundred workers and ran three furnaces day and night. The glassworks was known for a pale "
        "green glass, the colour coming from iron in the local sand. A fire in 1911 destroyed the largest"
        " furnace, and the company never fully recovered. It closed in 1936, and the buildings stood "
        "empty for decades. In 2004 the main hall was converted into a museum where glassblowers give "
        "demonstrations using a small reconstructed furnace.",
    ),
    (
        "Kestrel Point Observatory",
        "Kestrel Point Observatory was built in 1896 on a headland in the fictional region of Lowmarch, "
        "chosen for its clear skies and distance from town lights. Its main instrument was a refracting "
        "telescope with a lens of sixty centimetres, ground by the optician Harriet Vane-Collis over "
        "three years. The observatory's first director, Ludvig Ammerson, catalogued more than four "
        "thousand double stars and published his results in twelve volumes. During the winter months the "
        "staff lived in a small stone cottage beside the dome and were often cut off by snow for weeks. "
        "The observatory was closed as a research station in 1967 but reopened as a public centre in "
        "1990. On clear evenings visitors can still look through the original telescope.",
    ),
    (
        "Aldric Penhallow",
        "Aldric Penhallow was a stonemason and self-taught engineer born in 1802 in the quarry village of"
        " St Merrith. He is best known for designing the Penhallow Locks, a flight of nine canal locks "
        "that lift boats forty metres up the side of the Tregan Valley. Penhallow had no formal training "
        "and worked out his designs using scale models built from slate offcuts. The locks took six years"
        " to build and were opened in 1838 with a procession of barges decorated with flowers. Penhallow "
        "later advised on harbour walls and bridges across the county, but he refused every offer to move"
        " to the capital. He died in 1871 and was buried in St Merrith churchyard beneath a slate "
        "headstone he carved himself. His models are displayed in the village hall.",
    ),
    (
        "Brannock Fair",
        "Brannock Fair is an annual livestock and craft fair held on the common outside the town of "
        "Brannock since at least 1520. It takes place over three days in late October, after the harvest "
        "has been gathered. Farmers bring sheep, cattle and ponies for sale, while craftspeople sell "
        "baskets, woollen goods and carved wooden spoons. The fair is opened each year by the oldest "
        "resident of the town, who rings a hand bell that is said to date from the first fair. A "
        "highlight is the hurdle race, in which young farmers carry a sheep hurdle across the common and "
        "back. In 1918 the fair was cancelled for the only time in its recorded history. Attendance today"
        " is around twenty thousand visitors over the three days.",
    ),
    (
        "Yevra Castellan",
        "Yevra Castellan was a printer and publisher who ran the Lantern Press in the city of Olmsworth "
        "from 1872 to 1910. She began by printing handbills and railway timetables, but soon moved into "
        "books, specialising in cheap editions of poetry and travel writing. Castellan was known for "
        "paying her authors a fair share of every copy sold, which was rare at the time. She also printed"
        " a weekly newspaper, the Olmsworth Lantern, which campaigned for clean water and public "
        "libraries. Her press was powered by a small steam engine that she maintained herself. When she "
        "retired, she sold the business to her foreman, Pieter Hask, on condition that he keep every "
        "employee. The original press is kept in the Olmsworth city library, which opened in 1899 after "
        "years of her campaigning.",
    ),
    (
        "The Tarrow Tunnel",
        "The Tarrow Tunnel is a railway tunnel, 3.2 kilometres long, that carries the line between "
        "Ashcombe and Wick Tarrow beneath the fictional Tarrow Hills. Construction began in 1859 and took"
        " seven years, with crews digging from both ends and from four vertical shafts. The two "
        "tunnelling teams met in 1865 with an error of less than ten centimetres, a feat celebrated with "
        "a dinner held inside the tunnel itself. More than nine hundred labourers worked on the project, "
        "many of them living in a camp of wooden huts on the hillside. The tunnel was lined with nearly "
        "twenty million bricks made from clay dug nearby. It remains in use today, and the ventilation "
        "shafts can still be seen as brick towers standing on the hilltop.",
    ),
    (
        "Orla Demsky",
        "Orla Demsky was a mountain guide who led climbing parties in the fictional Sorrel Range from "
        "1905 until 1940. She grew up in the village of Hallin, the daughter of a shepherd, and began "
        "guiding at the age of seventeen after rescuing two lost walkers in a snowstorm. Demsky made the "
        "first recorded ascent of the north face of Mount Grell in 1913, climbing with a rope of hemp and"
        " iron spikes forged by the village blacksmith. She was known for her caution, often turning "
        "parties back when she judged the weather unsafe. Over her career she guided more than two "
        "thousand climbers without a single fatality. In retirement she ran a small inn at Hallin, where "
        "her ice axes hang above the fireplace.",
    ),
    (
        "Wendle Cove",
        "Wendle Cove is a sheltered bay on the fictional Carrick coast, enclosed by cliffs on three sides"
        " and reached by a steep path from the village above. For centuries the cove was used by "
        "smugglers, who hid barrels of spirits in caves at the foot of the cliffs. A customs station was "
        "built on the clifftop in 1790, and the officers kept a logbook recording every boat that entered"
        " the bay. Today the cove is a popular spot for swimming, and a small café operates from the old "
        "boathouse during the summer. At low tide, visitors can walk into the largest cave, which extends"
        " nearly forty metres into the rock. The village holds a lantern walk down to the cove every "
        "midwinter evening.",
    ),
    (
        "Greaves and Palliser",
        "Greaves and Palliser was a firm of instrument makers founded in 1848 in the city of Marrowgate "
        "by Thomas Greaves and Eleanor Palliser. The company made barometers, thermometers and surveying "
        "levels, and its instruments were used by railway engineers across the country. Palliser managed "
        "the workshop and designed a pocket barometer that became the firm's best-selling product. The "
        "company's catalogue of 1880 listed over four hundred items, from simple rain gauges to elaborate"
        " weather clocks for town halls. The firm employed about ninety people at its peak and was known "
        "for training deaf apprentices, teaching them with drawings and hand signals. It merged with a "
        "larger company in 1921, and the Greaves and Palliser name disappeared from catalogues by 1930.",
    ),
    (
        "Isolde Harrowgate",
        "Isolde Harrowgate was a physician who founded the first cottage hospital in the farming district"
        " of Lower Brenn in 1884. Before the hospital opened, the nearest doctor lived a day's ride away,"
        " and injured farm workers were often treated by neighbours. Harrowgate raised the money for the "
        "hospital by organising concerts and a subscription scheme in which each family paid a few "
        "pennies a week. The hospital had eight beds, a small operating room and a garden where patients "
        "could sit in good weather. Harrowgate travelled to remote farms on a bicycle, carrying her "
        "instruments in a leather satchel. She kept careful records of every case, and her notes on farm "
        "accidents led to new rules on the guarding of threshing machines.",
    ),
    (
        "Mount Ulverstone",
        "Mount Ulverstone is the highest peak of the fictional Corran Hills, rising to 1,182 metres above"
        " sea level. Its summit is a broad plateau of granite boulders, and on clear days the coast can "
        "be seen more than sixty kilometres away. The mountain was used as a survey station in 1806, and "
        "a stone pillar built by the surveyors still marks the highest point. The lower slopes are "
        "covered in pine forest planted in the 1920s, while the upper slopes are heather and bare rock. A"
        " mountain hut maintained by volunteers offers shelter to walkers caught by bad weather. The most"
        " popular route to the summit starts from the village of Lowther Bridge and takes about four "
        "hours. Snow often lingers in the northern gullies until June.",
    ),
    (
        "Caspar Ellingwood",
        "Caspar Ellingwood was a beekeeper and writer who lived on a smallholding near the village of "
        "Thornby from 1860 to 1931. He kept up to sixty hives and experimented with new designs, "
        "including a hive with glass walls that allowed him to watch the bees at work. His book, A Year "
        "Among the Bees, described the life of a colony month by month and was reprinted many times. "
        "Ellingwood was one of the first to argue that bees should be left enough honey to survive the "
        "winter rather than fed on sugar. He sold his honey at Thornby market from a cart painted with "
        "yellow stripes. After his death, his hives were cared for by the village school, which still "
        "keeps bees in the old orchard.",
    ),
    (
        "The Lisk Ferry",
        "The Lisk Ferry is a chain ferry that has carried passengers and vehicles across the fictional "
        "river Lisk at Gammon Reach since 1854. The ferry pulls itself along two iron chains laid across "
        "the riverbed, driven first by a steam engine and now by an electric motor. The crossing is about"
        " two hundred metres and takes five minutes. The first ferry was a wooden platform that could "
        "carry a single horse and cart; the current vessel, built in 1996, can carry twelve cars. The "
        "ferry operates from dawn to dusk every day of the year except during floods. Its ticket office, "
        "a small brick hut on the northern bank, still displays the original table of fares, which lists "
        "charges for sheep, geese and wheelbarrows.",
    ),
    (
        "Nessa Pryor",
        "Nessa Pryor was a weaver from the hill town of Caddon who revived the craft of tablet weaving in"
        " the early twentieth century. She learned the technique from fragments of old belts found in a "
        "chest at her grandmother's house and worked out the patterns by counting threads under a "
        "magnifying glass. Pryor published a small book of patterns in 1922, illustrated with her own "
        "drawings, which sold out within a year. She taught classes in the Caddon town hall every winter "
        "and sent patterns by post to weavers in distant villages. Her finest work, a long sash woven for"
        " the wedding of her niece, took nine months to complete. It is now kept in a glass case in the "
        "Caddon museum, alongside her wooden loom.",
    ),
    (
        "Birchmoor Station",
        "Birchmoor Station is a small railway station on the fictional Northdown line, opened in 1874 to "
        "serve the village of Birchmoor and the farms around it. The station building, made of red brick "
        "with a slate roof, has a waiting room, a ticket office and a house for the stationmaster. In its"
        " early years the station handled milk churns, timber and livestock as well as passengers. A "
        "signal box at the end of the platform controlled the level crossing and a short siding. The "
        "station was threatened with closure in 1963 but was saved after villagers collected four "
        "thousand signatures. Today trains stop every two hours, and the waiting room is kept warm in "
        "winter by a coal stove tended by volunteers.",
    ),
    (
        "Hollin Quarry",
        "Hollin Quarry is a former limestone quarry on the fictional Marle Downs, worked from about 1790 "
        "until 1952. The stone was burned in kilns beside the quarry to produce lime for farmers, who "
        "spread it on their fields to improve the soil. At its busiest the quarry employed about one "
        "hundred and fifty men and boys, and a row of cottages was built nearby to house them. When "
        "quarrying ended, the deep pit slowly filled with rainwater and became a lake of striking "
        "clarity. The old kilns, three stone towers with arched openings, have been repaired and are now "
        "a protected monument. Rare orchids grow on the quarry floor, and the site is managed as a nature"
        " reserve by the county.",
    ),
    (
        "Dagny Wolstenholme",
        "Dagny Wolstenholme was a cartographer and teacher who produced the first detailed street maps of"
        " the growing city of Brackford between 1890 and 1925. She surveyed the streets on foot with a "
        "measuring wheel, often working at dawn to avoid the traffic of carts and trams. Her maps were "
        "printed in six colours and showed every house number, a level of detail unusual for the time. "
        "Wolstenholme also taught geography at the Brackford girls' school, where she encouraged her "
        "pupils to map their own neighbourhoods. Copies of her maps were used by the fire brigade and the"
        " post office for decades. The city archive holds more than eighty of her original drawings, some"
        " annotated with notes about buildings later demolished.",
    ),
    (
        "Sollen Abbey",
        "Sollen Abbey was a monastery founded in 1142 in a wooded valley of the fictional Sollen Hills. "
        "The monks cleared the forest, drained the valley floor and built a water mill that ground grain "
        "for the surrounding villages. At its height the abbey housed about forty monks and owned farms "
        "across the region. The abbey church had a tall tower that could be seen from the coast, and "
        "sailors used it as a landmark. The abbey was closed in 1539, and much of its stone was carried "
        "away to build farmhouses. The ruins of the church, the chapter house and the mill race survive "
        "and are open to visitors. Archaeologists excavating the site in 1988 found a set of bone dice "
        "and a silver seal.",
    ),
    (
        "Leopold Ashcroft",
        "Leopold Ashcroft was an inventor who lived in the manufacturing town of Dunmarrow from 1838 to "
        "1907. He held patents for a mechanical potato peeler, a folding umbrella frame and a lamp that "
        "dimmed itself automatically as its oil ran low. Ashcroft ran a small workshop behind his house, "
        "where he employed two assistants and a boy to sweep the floors. Many of his inventions were "
        "commercial failures, but the folding umbrella frame made him wealthy and was produced in large "
        "numbers for thirty years. He used part of his fortune to build a reading room for the workers of"
        " Dunmarrow, stocked with books on science and engineering. The reading room still stands and now"
        " houses the town's local history society.",
    ),
    (
        "Merrow Lighthouse",
        "Merrow Lighthouse stands on a rocky islet off Cape Merrow, on the fictional Tallis coast, and "
        "was first lit in 1831. The tower is twenty-eight metres tall and was built from granite blocks "
        "cut on the mainland and ferried out by barge. For more than a century it was staffed by three "
        "keepers who lived in the tower and took turns watching the light through the night. Supplies "
        "were delivered by boat once a fortnight, weather permitting, and in bad winters the keepers "
        "sometimes went six weeks without relief. The light was converted to electricity in 1948 and "
        "automated in 1985. The keepers' logbooks, which record passing ships, storms and the occasional "
        "visit by seals, are kept in the county archive.",
    ),
    (
        "Theda Brennick",
        "Theda Brennick was a composer and organist who served at St Aldwyn's church in the town of "
        "Harrowby for forty-two years. She wrote more than two hundred hymns and anthems, many of them "
        "for the town's choir of farm workers and mill girls. Brennick was also known for her "
        "arrangements of local folk songs, which she collected by visiting elderly singers in the "
        "surrounding villages and writing down their tunes. Her collection, published in 1911 as Songs of"
        " the Harrowby Vale, preserved dozens of songs that would otherwise have been lost. She played "
        "the church organ every Sunday until the age of eighty-one. The choir she founded still performs "
        "her music at an annual concert held in her memory.",
    ),
    (
        "Gallowmere Forest",
        "Gallowmere Forest is an ancient woodland of about thirty square kilometres in the fictional "
        "county of Wendmoor. The forest is dominated by oak and beech, some of them thought to be more "
        "than five hundred years old. In medieval times it was a royal hunting ground, and forest courts "
        "punished anyone caught taking deer or cutting timber without permission. Charcoal burners worked"
        " in the forest for centuries, and the circular platforms where they built their fires can still "
        "be found among the trees. The forest is now crossed by a network of footpaths and bridleways. A "
        "small museum in the village of Gallowmere displays tools used by the charcoal burners and "
        "woodcutters, including a two-man saw nearly three metres long.",
    ),
    (
        "Ruan Okonedo",
        "Ruan Okonedo was a shipwright who ran a boatyard on the estuary at Pellan Creek from 1886 to "
        "1931. He built fishing boats, pilot cutters and pleasure yachts, about one hundred and twenty "
        "vessels in all. Okonedo was known for the speed of his pilot cutters, which competed to reach "
        "incoming ships first and claim the fee for guiding them into harbour. He designed his boats by "
        "carving half-models from blocks of pine, then scaling the shapes up full size on the floor of "
        "his loft. His yard employed about twenty men, and he insisted that every apprentice learn to "
        "sail as well as build. Several of his boats are still sailing today, and his half-models are "
        "displayed at the Pellan Creek maritime society.",
    ),
    (
        "Ambleton Library",
        "Ambleton Library was opened in 1903 in the market town of Ambleton, funded by public "
        "subscription and a gift from the wool merchant Henry Caddick. The building has a domed reading "
        "room lit by a circular skylight and shelves for about twenty thousand books. The first "
        "librarian, Miss Rosamund Tey, introduced a children's corner and a lending scheme for farms too "
        "distant to visit the town. During the winter of 1947, when heavy snow cut off the outlying "
        "villages, library staff delivered books on sledges. The library also holds a collection of local"
        " newspapers dating back to 1820. A restoration in 2011 repaired the skylight and added a lift, "
        "while keeping the original oak shelves and reading desks.",
    ),
    (
        "Falk Sundergard",
        "Falk Sundergard was a farmer and naturalist who kept detailed weather diaries on his farm near "
        "the village of Helm between 1851 and 1903. Every morning at seven he recorded the temperature, "
        "wind direction, cloud cover and rainfall, along with notes on the first flowering of plants and "
        "the arrival of migrating birds. His fifty-two volumes of diaries form one of the longest "
        "continuous weather records kept by a single person in the region. Sundergard shared his "
        "observations with the county agricultural society, and his advice on sowing dates was widely "
        "followed by local farmers. He also planted a row of lime trees along the farm lane, one for each"
        " of his eleven children. The diaries are now held by the university in Calder.",
    ),
    (
        "Corvane Ironworks",
        "The Corvane Ironworks was established in 1769 beside a fast stream in the fictional Corvane "
        "Valley, where water wheels powered the bellows of two blast furnaces. The works produced pig "
        "iron, cooking pots and, later, cast iron pillars for bridges and market halls. Ore was carried "
        "down from hillside mines on packhorses, and charcoal came from the nearby woods until coke "
        "replaced it in 1803. The ironmaster, Gideon Harle, built a chapel, a school and rows of cottages"
        " for his workers, many of which are still lived in. The furnaces were blown out for the last "
        "time in 1878, when larger works on the coast made the valley unprofitable. The stone furnace "
        "stacks still stand, and the wheel pit has been cleared so visitors can see how the bellows were "
        "driven.",
    ),
)
